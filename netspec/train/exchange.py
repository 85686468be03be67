"""Batchnorm's exchange between worker processes: an all-gather of small vectors mid-step.

netspec/train/pool.py's WorkerPool creates one `BatchExchange` when its plan has batch-coupled
layers and hands it to them (ctx.exchange); it lives here to keep that file focused.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from netspec.plan.compiler import shared_array


class BatchExchange:
    """All-gather of small float64 vectors between the workers of one step, for batch-coupled
    layers (ctx.exchange). Worker k writes its vector into row k of a shared (2, W, width)
    buffer, then waits until every worker's row is in. Every worker then reads the same rows
    and combines them in the same order, so all get bit-identical totals. Successive gathers
    alternate between the two halves of the buffer, so a fast worker's next write never lands
    in rows that another is still reading.

    How a worker waits (SPIN):
    * spinning (x86): after its row, worker k stores a token (this step's number and the
      gather's) in seq[k] and reads seq until every worker's token is there. x86 keeps stores
      in order, so a token is never seen before its row. A worker polls its pipe every few
      spins, so a peer's failure or the pool stopping ends the wait, and yields the core to
      other processes between polls; after SPIN_SECONDS it sleeps between polls instead.
    * pipe round trips (elsewhere): each child tells the parent ("sync") and waits for its
      "go", which the parent sends once every child's row is in.
    On the 2-core test machine, where a process blocked in a pipe read is slow to wake, steps
    with pipe round trips took 1.00-1.19 of the same steps without the exchange, and 0.98-1.02
    spinning (benchmarks/exchange_cost.py; benchmarks/README.md)."""

    def __init__(self, pool, width: int):
        """pool: the WorkerPool (its workers, conns, and ways to fail)."""
        self.pool, self.conn = pool, None  # conn: a child's pipe to the parent
        self.rows = shared_array((2, pool.workers, width), np.float64)
        self.seq = shared_array((pool.workers,), np.int64)  # each worker's last token
        self.rank = 0  # this process's worker number (0: the parent)
        self.active = pool.workers  # workers taking part in this step
        self.calls = 0  # gathers so far in this step
        self.step = 0  # the pool's step number, for the tokens
        self.spin = SPIN  # fixed when the pool forks: every worker waits the same way

    def start_step(self, active: int, step: int) -> None:
        self.active, self.calls, self.step = active, 0, step

    def gather(self, vec: np.ndarray) -> np.ndarray:
        """(active workers, len(vec)): every worker's vec, row k from worker k."""
        rows = self.rows[self.calls % 2, :self.active, :len(vec)]
        self.calls += 1
        rows[self.rank] = vec
        if self.spin:
            token = self.step * MAX_GATHERS + self.calls
            self.seq[self.rank] = token  # after the row: seen only once the row is in
            self._spin(token)
        elif self.rank == 0:
            for k in range(1, self.active):
                self.pool._expect_sync(k)
            for k in range(1, self.active):
                self.pool._send(k, "go")
        else:
            self.conn.send("sync")
            if self._recv_or_exit() != "go":  # None: the pool is stopping mid-step
                raise SystemExit(0)
        return rows

    def _spin(self, token: int) -> None:
        """Wait until every active worker's token is at least `token`."""
        seq, spins, patient = self.seq[:self.active], 0, None
        while seq.min() < token:
            spins += 1
            if spins % SPINS_PER_POLL:
                continue
            self._check_peers(token)
            patient = patient or time.perf_counter() + SPIN_SECONDS
            if time.perf_counter() < patient:
                os.sched_yield()  # to any other process ready to run on this core
            else:  # a long wait (a loaded machine): leave the core to others
                time.sleep(SLEEP_SECONDS)

    def _check_peers(self, token: int) -> None:
        """Mid-gather: the parent raises a child's failure or death; a child exits when the
        parent stops the pool or is gone."""
        if self.rank != 0:
            if self.conn.poll():  # the parent's None, or its end of the pipe closing
                self._recv_or_exit()
                raise SystemExit(0)
            return
        for k in range(1, self.active):
            # A child's message while its token is missing is its error (or its death). Once
            # its token is in, the message can be its reply for this step: it may finish the
            # step while this process is descheduled between its last read of seq and this
            # poll. (Poll first: the child stores its token before it sends.)
            if self.pool.conns[k - 1].poll() and self.seq[k] < token:
                self.pool._fail_on_message(k)

    def _recv_or_exit(self):
        """A child's next message from the parent; the child exits if the parent is gone."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):  # the parent exited
            raise SystemExit(0) from None


# Batch exchanges wait by spinning on shared memory where stores are seen in program order
# (see BatchExchange); elsewhere by pipe round trips.
SPIN = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
SPINS_PER_POLL = 64  # spins between pipe polls (a poll costs a system call)
SPIN_SECONDS = 0.002  # then a waiting worker sleeps SLEEP_SECONDS between polls
SLEEP_SECONDS = 0.0001
MAX_GATHERS = 1 << 20  # gathers per step, at most: tokens are step * MAX_GATHERS + gather
