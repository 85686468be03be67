"""Batchnorm's exchange between worker processes: an all-gather of small vectors mid-step.

A WorkerPool (netspec/train/pool.py) makes one `BatchExchange` before it forks, when its plan
has batch-coupled layers, and hands it to their steps (ctx.exchange) for its steps only. The
exchange sends no messages: each process joins it with a `Watch` from the pool, the file
descriptors to watch while it waits (the pool's pipes) and what to do when one of them stirs or
the wait runs out, so that the pool's message protocol stays in pool.py.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netspec.kernels.shared import shared_array

SPINS_PER_CLOCK = 64  # token reads between clock readings (and yields of the core)
MAX_GATHERS = 1 << 20  # gathers per step, at most: tokens are step * MAX_GATHERS + gather


@dataclass
class Watch:
    """What a worker waiting in a gather watches besides its peers; given by the pool.

    check(token) is called when one of `fds` is readable: it must take what made it readable,
    or raise (which ends the wait). After `timeout` seconds of waiting (None: no limit),
    expired(missing) is called with the workers whose row is not in; it must raise."""

    fds: list[int]
    check: Callable[[int], None]
    timeout: float | None = None
    expired: Callable[[list[int]], None] | None = None


class BatchExchange:
    """All-gather of small float64 vectors between the workers of one step, for batch-coupled
    layers (ctx.exchange). Worker k writes its vector into row k of a shared (2, W, width)
    buffer, then waits until every worker's row is in. Every worker then reads the same rows
    and combines them in the same order, so all get bit-identical totals. Successive gathers
    alternate between the two halves of the buffer, so a fast worker's next write never lands
    in rows that another is still reading.

    How a worker waits: each worker has an eventfd. After writing its row, worker k stores a
    token (the step's number and the gather's) in seq[k] and adds 1 to every peer's eventfd;
    it has its gather once it has taken (active - 1) from its own. The kernel's lock on an
    eventfd orders a peer's row before the read that counts it, on every architecture. The
    waiter first spins on the tokens for up to `spin` seconds (a peer about to arrive is not
    worth a sleep and a wake-up), yielding the core between glances, then blocks in poll() on
    its eventfd and the Watch's descriptors, burning no core."""

    def __init__(self, workers: int, width: int, spin: float):
        self.rows = shared_array((2, workers, width), np.float64)
        self.seq = shared_array((workers,), np.int64)  # each worker's last token
        # one eventfd per worker: a counter its peers add to, which it alone reads
        self.fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(workers)]
        self.spin = spin
        self.rank = 0  # this process's worker number (0: the parent)
        self.watch: Watch | None = None
        self.poller = None
        self.credit = 0  # units taken from our eventfd and not yet spent on a gather
        self.active = workers  # workers taking part in this step
        self.calls = 0  # gathers so far in this step
        self.step = 0  # the pool's step number, for the tokens

    def join(self, rank: int, watch: Watch) -> None:
        """This process takes part as worker `rank` (after the fork), watching `watch`."""
        self.rank, self.watch, self.credit = rank, watch, 0
        self.poller = select.poll()
        for fd in (self.fds[rank], *watch.fds):
            self.poller.register(fd, select.POLLIN)

    def start_step(self, active: int, step: int) -> None:
        self.active, self.calls, self.step = active, 0, step

    def gather(self, vec: np.ndarray) -> np.ndarray:
        """(active workers, len(vec)): every worker's vec, row k from worker k."""
        rows = self.rows[self.calls % 2, :self.active, :len(vec)]
        self.calls += 1
        rows[self.rank] = vec
        token = self.step * MAX_GATHERS + self.calls
        self.seq[self.rank] = token  # a hint for spinning peers; the eventfds order the rows
        for k in range(self.active):
            if k != self.rank:
                os.eventfd_write(self.fds[k], 1)
        self._wait(token)
        return rows

    def missing(self, token: int) -> list[int]:
        """The other workers that have not written their row for gather `token`."""
        return [k for k in range(self.active) if k != self.rank and self.seq[k] < token]

    def close(self) -> None:
        """Close this process's eventfds (the exchange is done with)."""
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:  # closed already
                pass
        self.fds = []

    def _wait(self, token: int) -> None:
        """Until (active - 1) units are taken from our eventfd: spin, then block."""
        need, own, watch = self.active - 1, self.fds[self.rank], self.watch
        start = time.monotonic()
        if self.credit < need and self.spin > 0:
            self._spin(token, start + self.spin)
        while self.credit < need:
            try:
                self.credit += os.eventfd_read(own)
                continue
            except BlockingIOError:  # nothing yet: block below
                pass
            left = -1  # poll's "no limit"
            if watch.timeout is not None:
                left = max(0, int(1000 * (start + watch.timeout - time.monotonic())) + 1)
            events = self.poller.poll(left)
            if any(fd != own for fd, _ in events):
                watch.check(token)
            elif not events and left >= 0 and time.monotonic() >= start + watch.timeout:
                watch.expired(self.missing(token))
        self.credit -= need

    def _spin(self, token: int, until: float) -> None:
        """Read the tokens until every active worker's is in, or the clock passes `until`."""
        seq, spins = self.seq[:self.active], 0
        while seq.min() < token:
            spins += 1
            if spins % SPINS_PER_CLOCK == 0:
                if time.monotonic() > until:
                    return
                os.sched_yield()  # to any other process ready to run on this core
