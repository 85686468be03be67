"""Data-parallel training steps: one batch's gradient computed by several processes at once.

Worker k takes a contiguous slice of the batch, runs forward, the loss and backward on it in its
own copy of the plan, and scales its loss gradient by (slice size / batch size), so that the
slices' parameter gradients add up to the whole batch's mean-loss gradient. The calling process
is worker 0; workers 1..W-1 are children forked once, when the pool starts. One step:

    parent: batch indices -> shared memory, "gradient" to each child (the parameters are there)
    each worker: gather its rows, forward, loss, backward, on its slice of the batch
    children: gradients -> shared memory; reply (loss, correct count, first non-finite layer)
    parent: plan.grads += every child's gradients; the optimizer then steps as usual

Evaluation splits the samples evenly among the processes (each in batches of its own): the
parent copies the data it is given into a shared staging area, in rounds as
large as the area holds, and the predictions come back through shared memory. Every message
is defined here: "gradient", "evaluate" and None (exit) from the parent; a reply or ("error",
text) from a child.

Why processes and not threads: a step is hundreds of short NumPy calls, and the Python between
them holds the GIL, so threads take turns where processes run at once (docs/performance.md).
Each worker gets its share of the BLAS threads (plan.options.blas_threads).

Results are reproducible for a given number of workers, and differ only in rounding from a
one-process run (the gradient is a sum of per-slice sums). A layer that couples the samples of
a batch (batchnorm's statistics) gathers every worker's per-channel partial sums mid-step
through a `BatchExchange` (netspec/train/exchange.py), attached to its step during pool steps
only, so it normalises the whole batch as one process would. Its running statistics are shared
buffers that only the parent writes. Dropout masks are keyed by (seed, step, position in the
batch) (kernels/noise.py): each child is told the step and where its slice starts, and draws
the masks one process would draw for those samples.

No wait is unbounded. A waiting worker spins briefly, then blocks; the parent gives a silent
child plan.options.worker_timeout seconds, then names it (pid, and its state if stopped) and
stops the pool with a TrainingError, as it does when a child fails or dies. Children exit when
the parent stops them or dies, and the pool is stopped before multiprocessing's exit handler
joins its children, so the interpreter always exits.

Needs the 'fork' start method (Linux): children inherit the plan and the data without copies.
While the pool runs, the plan's parameters and buffers (its Arena, netspec/kernels/shared.py)
are shared memory: the parent's optimizer step is what the children compute with next.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.util
import signal

import numpy as np

from netspec.errors import TrainingError
from netspec.kernels import blas
from netspec.kernels.shared import shared_array
from netspec.train.exchange import BatchExchange, Watch

STAGING_BYTES = 64 << 20  # at most this much shared memory stages the data `evaluate` is given
SPLIT_ADVICE = ("train with --workers 1 to run in one process (an error there comes with its "
                "full context)")


def slice_gradient(plan, loss, x, y, idx, rows, scale: float = 1.0) -> tuple[float, int]:
    """Forward and backward on samples `idx` of (x, y), with dL/dlogits scaled by `scale`.

    x is (N, D), one contiguous row per sample; rows is a (>= len(idx), D) scratch buffer.
    Fills plan.grads; returns (the slice's mean loss, how many it classified correctly).
    """
    batch = np.take(x, idx, axis=0, out=rows[:len(idx)])  # (B, D) gather
    if plan.augment is not None:  # in place, keyed by (seed, epoch, sample index)
        plan.augment(batch, idx, plan.noise.step)
    logits = plan.run_forward(plan.to_internal(batch), train=True)  # (K, B)
    labels = y[idx]
    value, dlogits = loss(logits, labels, axis=0)
    if scale != 1.0:
        dlogits *= scale
    plan.run_backward(dlogits)
    return value, int(np.count_nonzero(logits.argmax(axis=0) == labels))


def eval_slice(plan, loss, x, y, lo: int, hi: int, batch: int, preds: np.ndarray) -> float:
    """Eval-mode forward over samples lo..hi-1 of (x, y) in batches; fills preds[lo:hi].

    x is (N, D). Returns the sum of the per-sample losses.
    """
    loss_sum = 0.0
    for i in range(lo, hi, batch):
        j = min(i + batch, hi)
        logits = plan.run_forward(plan.to_internal(x[i:j]), train=False)  # (K, B)
        value, _ = loss(logits, y[i:j], axis=0)
        loss_sum += value * (j - i)
        preds[i:j] = logits.argmax(axis=0)
    return loss_sum


class WorkerPool:
    """The calling process plus workers - 1 forked children; see the module docstring."""

    def __init__(self, plan, loss, x: np.ndarray, y: np.ndarray, workers: int, batch_size: int,
                 eval_rows: int = 0):
        """x (N, D), y (N,): the training data; the children see them as they are now, so do
        not modify them in place while the pool runs. eval_rows: the most rows `evaluate`
        passes to the workers at once (default batch_size)."""
        if workers < 2:
            raise ValueError(f"a WorkerPool needs at least 2 workers, got {workers}")
        self.plan, self.loss, self.x, self.y = plan, loss, x, y
        self.workers, self.timeout = workers, plan.options.worker_timeout
        self.steps = 0  # gradient steps so far (batch exchanges number their gathers by it)
        self.blas_threads = plan.options.blas_threads
        # (W - 1, P): child k's gradients in row k - 1; this step's batch indices
        self.grads = shared_array((workers - 1, plan.flat_params.size), plan.dtype)
        self.idx = shared_array((batch_size,), np.int64)
        self.rows = np.empty((batch_size, x.shape[1]), x.dtype)
        # evaluate's staging area: (rows, D) in a dtype that loses nothing the plan keeps
        dtype = np.promote_types(x.dtype, plan.dtype)
        rows = max(1, min(eval_rows or batch_size, STAGING_BYTES // (x.shape[1] * dtype.itemsize)))
        self.eval_x = shared_array((rows, x.shape[1]), dtype)
        self.eval_y = shared_array((rows,), y.dtype)
        self.preds = shared_array((rows,), np.int64)
        self.coupled = [s for s in plan.steps if s.info.layer.couples_batch]
        self.exchange = None
        if self.coupled:  # each gathers (count, mean, var) or (dbias, dweight) per channel
            width = 1 + 2 * max(s.info.in_shape[0] for s in self.coupled)
            self.exchange = BatchExchange(workers, width, plan.options.worker_spin)
        self.early = {}  # k -> child k's reply, read while the parent waited in a gather
        self.conns, self.procs = [], []
        plan.arena.share()  # before the fork: parameters and buffers shared while we run
        # Stops the children when the pool is closed or collected, and at exit before
        # multiprocessing's own exit handler joins its daemon children (which ignore the
        # SIGTERM it sends them first, and would be joined forever).
        self._finalizer = multiprocessing.util.Finalize(
            self, _stop, (self.conns, self.procs, self.exchange, plan.arena), exitpriority=10)
        try:
            context = multiprocessing.get_context("fork")
            for k in range(1, workers):
                mine, theirs = context.Pipe()
                proc = context.Process(target=self._serve, args=(k, theirs, [mine, *self.conns]),
                                       name=f"netspec-worker-{k}", daemon=True)
                proc.start()
                theirs.close()
                self.conns.append(mine)
                self.procs.append(proc)
        except BaseException:
            self.close()
            raise
        if self.exchange is not None:
            self.exchange.join(0, Watch([c.fileno() for c in self.conns], self.check_children,
                                        self.timeout, self.stuck))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    @property
    def closed(self) -> bool:
        return not self.procs

    def blas_limit(self):
        """Context: the calling process's BLAS at its share of the threads."""
        return blas.limit(self.blas_threads)

    def gradient(self, idx: np.ndarray) -> tuple[float, int, str | None]:
        """Fill plan.grads with the batch's gradient; (mean loss, correct, first non-finite
        layer if the loss is not finite). Dropout masks are those of step plan.noise.step."""
        n = len(idx)
        self.plan.noise.offset = 0  # the parent's slice starts the batch
        w = min(self.workers, n)
        self._attach(self.exchange)
        try:
            return self._gradient(idx, n, w)
        except BaseException:
            self.close()  # children may be waiting mid-step in a batch exchange
            raise
        finally:
            self._attach(None)  # the plan runs alone between pool steps

    def _attach(self, exchange) -> None:
        for step in self.coupled:
            step.ctx.exchange = exchange

    def _gradient(self, idx, n, w):
        bounds = [i * n // w for i in range(w + 1)]  # worker k: idx[bounds[k]:bounds[k + 1]]
        self.idx[:n] = idx
        self.steps += 1
        if self.exchange is not None:
            self.exchange.start_step(w, self.steps)
        for k in range(1, w):  # the children's dropout masks: at their offsets in this step
            self._send(k, ("gradient", bounds[k], bounds[k + 1], n, w, self.plan.noise.step,
                           self.steps))
        own = bounds[1]
        loss, correct = slice_gradient(self.plan, self.loss, self.x, self.y, idx[:own],
                                       self.rows, own / n)
        bad = None if math.isfinite(loss) else self.plan.first_nonfinite()
        loss *= own / n
        for k, (part_loss, part_correct, part_bad) in self._replies(w):
            loss += part_loss * (bounds[k + 1] - bounds[k]) / n
            correct += part_correct
            bad = bad or part_bad
            self.plan.flat_grads += self.grads[k - 1]
        return loss, correct, bad

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int, preds: np.ndarray) -> float:
        """eval_slice over x (N, D) and y (N,) in batches, split across the workers, in rounds
        of as many as the staging area holds (of its rows, when a batch is larger): fills
        preds[:N] and returns the loss sum."""
        n, rows = len(x), len(self.eval_x)
        per_round = rows // batch * batch or rows
        if x.shape[1:] != self.eval_x.shape[1:]:  # data of another shape: in this process
            return eval_slice(self.plan, self.loss, x, y, 0, n, batch, preds)  # (an error there)
        loss_sum = 0.0
        try:
            for start in range(0, n, per_round):
                m = min(per_round, n - start)
                self.eval_x[:m], self.eval_y[:m] = x[start:start + m], y[start:start + m]
                loss_sum += self._evaluate_round(m, batch)
                preds[start:start + m] = self.preds[:m]
        except BaseException:
            self.close()  # children may still be evaluating
            raise
        return loss_sum

    def _evaluate_round(self, m: int, batch: int) -> float:
        """The samples split evenly across the processes (in eval mode each sample is on its
        own), each share in batches of at most `batch`: 3 batches' worth on 2 workers is 1.5
        each, not 2 and 1."""
        w = max(1, min(self.workers, m))
        bounds = [i * m // w for i in range(w + 1)]
        for k in range(1, w):
            self._send(k, ("evaluate", bounds[k], bounds[k + 1], batch))
        loss_sum = eval_slice(self.plan, self.loss, self.eval_x, self.eval_y, 0, bounds[1],
                              batch, self.preds)
        for _, (part_sum,) in self._replies(w):
            loss_sum += part_sum
        return loss_sum

    # ------------------------------------------------ messages, and what a silence means

    def _send(self, k: int, message) -> None:
        try:
            self.conns[k - 1].send(message)
        except OSError:  # BrokenPipeError: the child is gone
            self._died(k)

    def _replies(self, w: int):
        """Yield (k, reply) from children 1..w-1 in order. A child's failure is raised once
        all have answered, so that no reply is left in a pipe."""
        failure = None
        for k in range(1, w):
            reply = self._recv(k)
            if reply[0] == "error":
                failure = failure or f"worker process {k} failed: {reply[1]}"
            else:
                yield k, reply
        if failure:
            self._fail(failure)

    def _recv(self, k: int):
        """Child k's next message, within worker_timeout; its death or silence is raised."""
        if k in self.early:
            return self.early.pop(k)
        conn = self.conns[k - 1]
        try:
            if not conn.poll(self.timeout):
                self.stuck([k])
            return conn.recv()
        except (EOFError, OSError):
            self._died(k)

    def check_children(self, token: int) -> None:
        """The parent, waiting in a batch exchange, sees a child's pipe stir: a child's
        failure or death is raised; a reply (a child may finish the step while this process
        is descheduled) is kept for `_replies`."""
        for k, conn in enumerate(self.conns, 1):
            if not conn.poll():
                continue
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                self._died(k)
            if reply[0] == "error" or k in self.early:  # a second message is no reply
                why = reply[1] if reply[0] == "error" else f"unexpected {reply!r}"
                self._fail(f"worker process {k} failed: {why}")
            self.early[k] = reply

    def stuck(self, ks: list[int]) -> None:
        """Stop the pool and raise that workers `ks` sent nothing for worker_timeout seconds."""
        ks = ks or list(range(1, len(self.procs) + 1))  # all in, but a unit missing: any
        names = "; ".join(f"worker process {k} (pid {self.procs[k - 1].pid}) sent nothing for "
                          f"{self.timeout:g} s (the plan option worker_timeout)"
                          f"{process_state(self.procs[k - 1].pid)}" for k in ks)
        self._fail(f"{names}; the workers were stopped",
                   "if the machine is short of cores or memory, train with fewer workers")

    def _fail(self, failure: str, advice: str = SPLIT_ADVICE):
        """Stop the pool and raise `failure` with `advice`."""
        self.close()
        raise TrainingError(f"{failure}; {advice}")

    def _died(self, k: int):
        proc = self.procs[k - 1]
        proc.join(timeout=1)
        self.close()
        raise TrainingError(
            f"worker process {k} (pid {proc.pid}) exited unexpectedly (exit code "
            f"{proc.exitcode}); {SPLIT_ADVICE}") from None

    def _serve(self, k: int, conn, parent_ends) -> None:
        """Child k's loop: one slice's gradient or evaluation per message, until None or the
        parent is gone."""
        for sig in (signal.SIGINT, signal.SIGTERM):  # the parent's to handle: it stops us
            signal.signal(sig, signal.SIG_IGN)
        for end in parent_ends:  # so that the parent's death closes every pipe
            end.close()
        blas.limit_process(self.blas_threads)  # for the child's lifetime
        np.seterr(over="ignore", invalid="ignore", divide="ignore")  # the parent reports NaNs
        plan, rows, grads = self.plan, self.rows, self.grads[k - 1]
        if self.exchange is not None:  # the child runs pool steps only: attached for good
            self.exchange.join(k, Watch([conn.fileno()], _parent_stopped))
            self._attach(self.exchange)
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the parent exited
                return
            if message is None:
                return
            try:
                if message[0] == "gradient":
                    _, lo, hi, n, active, plan.noise.step, step = message
                    plan.noise.offset = lo
                    if self.exchange is not None:
                        self.exchange.start_step(active, step)
                    loss, correct = slice_gradient(plan, self.loss, self.x, self.y,
                                                   self.idx[lo:hi], rows, (hi - lo) / n)
                    np.copyto(grads, plan.flat_grads)
                    bad = None if math.isfinite(loss) else plan.first_nonfinite()
                    reply = (loss, correct, bad)
                else:  # "evaluate"
                    _, lo, hi, batch = message
                    reply = (eval_slice(plan, self.loss, self.eval_x, self.eval_y, lo, hi,
                                        batch, self.preds),)
            except Exception as e:  # noqa: BLE001 - any failure goes to the parent, which stops
                reply = ("error", f"{type(e).__name__}: {e}")
            try:
                conn.send(reply)
            except OSError:  # the parent exited mid-step
                return

    def close(self) -> None:
        """Stop the children (idempotent; also runs when the pool is garbage-collected, and
        at exit). The plan's parameters are private to this process again."""
        self._finalizer()
        self.conns, self.procs = [], []
        self._attach(None)


def _parent_stopped(token: int) -> None:
    """A child's pipe stirred while it waits in a batch exchange: the parent's None, or its
    end of the pipe closing. Either way the child exits."""
    raise SystemExit(0)


def process_state(pid: int) -> str:
    """': it is stopped (state T in /proc/<pid>/stat, ...)', how process pid stands, for an
    error message; '' if /proc does not say."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
    what = {"T": "stopped", "t": "stopped", "D": "waiting on the disk", "Z": "gone",
            "R": "running", "S": "sleeping"}.get(state, "in state")
    why = {"T": ", by SIGSTOP or job control; kill -CONT resumes it", "t": ", by a debugger",
           "D": ", swapping?"}.get(state, "")
    return f": it is {what} (state {state} in /proc/{pid}/stat{why})"


def _stop(conns, procs, exchange, arena) -> None:
    """Ask each child to exit, make sure it has, and make the plan's arena private again."""
    for conn in conns:
        try:
            conn.send(None)
        except OSError:  # already gone
            pass
        conn.close()
    for proc in procs:
        proc.join(timeout=2)
        if proc.is_alive():
            proc.kill()  # children ignore SIGTERM; SIGKILL also ends a stopped one
            proc.join(timeout=2)
    if exchange is not None:
        exchange.close()
    arena.unshare()
