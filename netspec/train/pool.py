"""Data-parallel training steps: one batch's gradient computed by several processes at once.

Worker k takes a contiguous slice of the batch, runs forward, the loss and backward on it in its
own copy of the plan, and scales its loss gradient by (slice size / batch size), so that the
slices' parameter gradients add up to the whole batch's mean-loss gradient. The calling process
is worker 0; workers 1..W-1 are children forked once, before the first step. One step:

    parent: batch indices -> shared memory, "go" to each child (the parameters are there)
    each worker: gather its rows, forward, loss, backward, on its slice of the batch
    children: gradients -> shared memory; reply (loss, correct count, first non-finite layer)
    parent: plan.grads += every child's gradients; the optimizer then steps as usual

Evaluation works the same way, without the gradients: `evaluate` gives each worker a run of
whole batches of a data set the children already hold (named when they were forked, such as
"test"), and the predictions come back through shared memory.

Why processes and not threads: a LeNet step is a few hundred NumPy calls of tens of
microseconds each, and the Python between them holds the GIL. On this project's 2-core test
machine, two threads ran a pair of half-batch steps in ~1.35x the time of one; two processes
in ~1.05x. Each worker gets an equal share of the BLAS threads (one each on 2 cores: at these
GEMM sizes batch-64 LeNet steps take as long with one BLAS thread as with two).

Results are reproducible for a given number of workers, and differ only in rounding from a
one-process run (the gradient is a sum of per-slice sums). A layer that couples the samples of
a batch (batchnorm's statistics) gathers every worker's per-channel partial sums mid-step
through a `BatchExchange` (netspec/train/exchange.py: shared memory; the workers wait for each other
by spinning on it, or by a pipe round trip per gather off x86), so it normalises the whole
batch as one process would. Its running statistics are shared buffers that only the parent
writes. Dropout masks are keyed by (seed, step, position in the batch) (kernels/noise.py): each
child is told the step and where its slice starts, and draws the masks one process would draw
for those samples.

Needs the 'fork' start method (Linux): children inherit the plan and the data without copies,
and the plan's parameter arena, allocated in shared memory (`shared_array`), is the same memory
in every process: the parent's optimizer step is what the children compute with next.
"""

from __future__ import annotations

import math
import multiprocessing
import signal
import weakref

import numpy as np

from netspec.errors import TrainingError
from netspec.kernels import blas
from netspec.plan.compiler import shared_array
from netspec.plan.options import coupled_layers
from netspec.train.exchange import BatchExchange


def slice_gradient(plan, loss, x, y, idx, rows, scale: float = 1.0) -> tuple[float, int]:
    """Forward and backward on samples `idx` of (x, y), with dL/dlogits scaled by `scale`.

    x is (N, D), one contiguous row per sample; rows is a (>= len(idx), D) scratch buffer.
    Fills plan.grads; returns (the slice's mean loss, how many it classified correctly).
    """
    batch = np.take(x, idx, axis=0, out=rows[:len(idx)])  # (B, D) gather
    augment = getattr(plan, "augment", None)  # the trainer's data.augment (data/augment.py)
    if augment is not None:  # in place, keyed by (seed, epoch, sample index)
        augment(batch, idx, plan.noise.step)
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
                 eval_sets: dict | None = None):
        """x (N, D), y (N,): the training data, "train" for `evaluate`. eval_sets: more (x, y)
        by name, such as {"test": ...}, that `evaluate` may split across the workers too. The
        children see all of them as they are now: do not modify them in place while the pool
        runs."""
        if workers < 2:
            raise ValueError(f"a WorkerPool needs at least 2 workers, got {workers}")
        self.plan, self.loss, self.x, self.y = plan, loss, x, y
        self.eval_sets = {"train": (x, y)} | {
            k: (a.reshape(len(a), -1), b) for k, (a, b) in (eval_sets or {}).items()}
        self.preds = shared_array((max(len(b) for _, b in self.eval_sets.values()),), np.int64)
        self.workers = workers
        self.steps = 0  # gradient steps so far (batch exchanges number their gathers by it)
        self.blas_threads = plan.options.blas_threads
        size = plan.flat_params.size
        self.grads = shared_array((workers - 1, size), plan.dtype)  # child k's gradients: row k-1
        self.idx = shared_array((batch_size,), np.int64)  # this step's batch indices
        self.rows = np.empty((batch_size, x.shape[1]), x.dtype)
        coupled = coupled_layers(step.info for step in plan.steps)
        self.exchange = None
        if coupled:  # each gathers (count, mean, var) or (dbias, dweight) per channel
            self.exchange = BatchExchange(self, 1 + 2 * max(i.in_shape[0] for i in coupled))
            for step in plan.steps:
                step.ctx.exchange = self.exchange
        self.conns, self.procs = [], []
        context = multiprocessing.get_context("fork")
        for k in range(1, workers):
            mine, theirs = context.Pipe()
            proc = context.Process(target=self._serve, args=(k, theirs, [mine, *self.conns]),
                                   name=f"netspec-worker-{k}", daemon=True)
            proc.start()
            theirs.close()
            self.conns.append(mine)
            self.procs.append(proc)
        self._finalizer = weakref.finalize(self, _stop, self.conns, self.procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def blas_limit(self):
        """Context: the calling process's BLAS at its share of the threads."""
        return blas.limit(self.blas_threads)

    def gradient(self, idx: np.ndarray) -> tuple[float, int, str | None]:
        """Fill plan.grads with the batch's gradient; (mean loss, correct, first non-finite
        layer if the loss is not finite). Dropout masks are those of step plan.noise.step."""
        n = len(idx)
        self.plan.noise.offset = 0  # the parent's slice starts the batch
        w = min(self.workers, n)
        try:
            return self._gradient(idx, n, w)
        except BaseException:
            self.close()  # children may be waiting mid-step in a batch exchange
            raise

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

    def evaluate(self, name: str, n: int, batch: int, preds: np.ndarray) -> float:
        """eval_slice over the first n rows of the data set `name` ("train" or one of
        eval_sets), split across the workers in whole batches: fills preds[:n] and returns the
        loss sum."""
        x, y = self.eval_sets[name]
        if not 0 <= n <= len(x):
            raise ValueError(f"{name} has {len(x)} rows, not {n}")
        batches = -(-n // batch)
        w = max(1, min(self.workers, batches))
        bounds = [min(n, i * batches // w * batch) for i in range(w + 1)]
        for k in range(1, w):
            self._send(k, ("evaluate", name, bounds[k], bounds[k + 1], batch))
        loss_sum = eval_slice(self.plan, self.loss, x, y, 0, bounds[1], batch, preds)
        for k, (part_sum,) in self._replies(w):
            loss_sum += part_sum
            lo, hi = bounds[k], bounds[k + 1]
            preds[lo:hi] = self.preds[lo:hi]
        return loss_sum

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

    def _expect_sync(self, k: int) -> None:
        """Wait for child k's "sync" in a batch exchange; its failure or death is raised."""
        reply = self._recv(k)
        if reply != "sync":
            self._fail_on_message(k, reply)

    def _fail_on_message(self, k: int, reply=None):
        """Raise child k's failure (its next message, if not given), or its death."""
        reply = self._recv(k) if reply is None else reply
        message = reply[1] if reply and reply[0] == "error" else f"unexpected {reply!r}"
        self._fail(f"worker process {k} failed: {message}")

    def _recv(self, k: int):
        """Child k's next message; its death is raised as a TrainingError."""
        try:
            return self.conns[k - 1].recv()
        except (EOFError, OSError):
            self._died(k)

    def _fail(self, failure: str):
        """Stop the pool and raise `failure` with the advice to run in one process."""
        self.close()
        raise TrainingError(failure + "; train with --workers 1 to run in one process "
                            "(an error there comes with its full context)")

    def _died(self, k: int):
        proc = self.procs[k - 1]
        proc.join(timeout=1)
        self.close()
        raise TrainingError(
            f"worker process {k} (pid {proc.pid}) exited unexpectedly (exit code "
            f"{proc.exitcode}); train with --workers 1 to run in one process") from None

    def _serve(self, k: int, conn, parent_ends) -> None:
        """Child k's loop: one slice's gradient per message, until None or the parent is gone."""
        for sig in (signal.SIGINT, signal.SIGTERM):  # the parent's to handle: it stops us
            signal.signal(sig, signal.SIG_IGN)
        for end in parent_ends:  # so that the parent's death closes every pipe
            end.close()
        blas.limit_process(self.blas_threads)  # for the child's lifetime
        np.seterr(over="ignore", invalid="ignore", divide="ignore")  # the parent reports NaNs
        plan, rows, grads = self.plan, self.rows, self.grads[k - 1]
        if self.exchange is not None:
            self.exchange.rank, self.exchange.conn = k, conn
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
                    _, name, lo, hi, batch = message
                    x, y = self.eval_sets[name]
                    reply = (eval_slice(plan, self.loss, x, y, lo, hi, batch, self.preds),)
            except Exception as e:  # noqa: BLE001 - any failure goes to the parent, which stops
                reply = ("error", f"{type(e).__name__}: {e}")
            try:
                conn.send(reply)
            except OSError:  # the parent exited mid-step
                return

    def close(self) -> None:
        """Stop the children (idempotent; also runs when the pool is garbage-collected)."""
        self._finalizer()
        self.conns, self.procs = [], []
        if self.exchange is not None:  # the plan runs in one process again
            for step in self.plan.steps:
                step.ctx.exchange = None


def _stop(conns, procs) -> None:
    """Ask each child to exit, then make sure it has."""
    for conn in conns:
        try:
            conn.send(None)
        except OSError:  # already gone
            pass
        conn.close()
    for proc in procs:
        proc.join(timeout=2)
        if proc.is_alive():
            proc.kill()  # children ignore SIGTERM
            proc.join(timeout=2)
