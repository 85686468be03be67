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
whole batches of a data set the children already hold (one registered when they were forked, or
consecutive rows of it), and the predictions come back through shared memory.

Why processes and not threads: a LeNet step is a few hundred NumPy calls of tens of
microseconds each, and the Python between them holds the GIL. On this project's 2-core test
machine, two threads ran a pair of half-batch steps in ~1.35x the time of one; two processes
in ~1.05x. Each worker gets an equal share of the BLAS threads (one each on 2 cores: at these
GEMM sizes batch-64 LeNet steps take as long with one BLAS thread as with two).

Results are reproducible for a given number of workers, but differ in rounding from a
one-process run (the gradient is a sum of per-slice sums). A layer that couples the samples of
a batch (batchnorm's statistics) gathers every worker's per-channel partial sums mid-step
through a `BatchExchange` (shared memory, plus one pipe round trip per gather between the
parent and each child), so it normalises the whole batch as one process would. Its running
statistics are shared buffers that only the parent writes. Stochastic layers (dropout)
draw from the plan's Generator in the parent; each child gets a fresh stream per step, seeded
from that Generator, so runs and resumed runs stay reproducible.

Needs the 'fork' start method (Linux): children inherit the plan and the data without copies,
and the plan's parameter arena, allocated in shared memory (`shared_array`), is the same memory
in every process: the parent's optimizer step is what the children compute with next.
"""

from __future__ import annotations

import math
import mmap
import multiprocessing
import os
import signal
import sys
import weakref

import numpy as np
from threadpoolctl import threadpool_limits

from netspec.errors import TrainingError

MAX_AUTO_WORKERS = 2  # what `workers: auto` may pick; measured on 2 cores only
# 'auto' splits batches only for networks that use each weight at least this many times per
# sample (convolutions: LeNet ~6.8). Each worker reads and writes every weight and gradient once
# per step whatever its share of the batch, so fully connected nets (1 use per sample) gain
# nothing: measured on 2 cores, two workers train the MLPs in specs/ 1.2-1.7x slower at batch
# sizes 32-512, and LeNet and tiny-zoo ~1.3x faster.
MIN_AUTO_WEIGHT_REUSE = 3.0


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def coupled_layers(infos) -> list:
    """The layers whose samples interact within a batch (they exchange sums across workers)."""
    return [info for info in infos if info.layer.couples_batch]


def weight_reuse(infos) -> float:
    """Multiply-accumulates per parameter per sample: ~1 for linear layers, more for convs."""
    params = sum(math.prod(s) for info in infos for s in info.param_shapes.values())
    return sum(info.macs for info in infos) / max(params, 1)


def resolve_workers(requested: int | str, infos) -> tuple[int, str]:
    """(number of worker processes, why) for a request of N or 'auto'.

    'auto' takes one worker per core, up to MAX_AUTO_WORKERS, when the network reuses its
    weights enough (MIN_AUTO_WEIGHT_REUSE) and the platform can fork; otherwise 1.
    An explicit N > 1 that cannot run is a ValueError that says why and what to do instead.
    """
    if requested == "auto":
        if not can_fork():
            return 1, "one process: worker processes need Linux (the 'fork' start method)"
        reuse = weight_reuse(infos)
        if reuse < MIN_AUTO_WEIGHT_REUSE:
            return 1, (f"one process: each weight is used {reuse:.1f}x per sample, too few for "
                       "worker processes to pay off")
        n = min(available_cores(), MAX_AUTO_WORKERS)
        why = f"{n} worker processes (one per core)" if n > 1 else "one process (one core)"
        if n > 1 and coupled_layers(infos):
            why += ", exchanging batchnorm statistics"
        return n, why
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ValueError(f"workers must be a positive integer or 'auto', got {requested!r}")
    if requested > 1 and not can_fork():
        raise ValueError("worker processes need Linux (the 'fork' start method); use 1 worker")
    return requested, ("one process" if requested == 1 else f"{requested} worker processes")


def slice_gradient(plan, loss, x, y, idx, rows, scale: float = 1.0) -> tuple[float, int]:
    """Forward and backward on samples `idx` of (x, y), with dL/dlogits scaled by `scale`.

    x is (N, D), one contiguous row per sample; rows is a (>= len(idx), D) scratch buffer.
    Fills plan.grads; returns (the slice's mean loss, how many it classified correctly).
    """
    batch = np.take(x, idx, axis=0, out=rows[:len(idx)])  # (B, D) gather
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


def shared_array(shape, dtype) -> np.ndarray:
    """A zeroed array in memory that processes forked after this call share (MAP_SHARED)."""
    count = math.prod(shape)
    buf = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1))
    return np.frombuffer(buf, dtype, count).reshape(shape)


class BatchExchange:
    """All-gather of small float64 vectors between the workers of one step, for batch-coupled
    layers (ctx.exchange). Worker k writes its vector into row k of a shared (2, W, width)
    buffer; each child then tells the parent ("sync") and waits for its "go", which the parent
    sends once every child's row is in. Every worker then reads the same rows and combines
    them in the same order, so all get bit-identical totals. Successive gathers alternate
    between the two halves of the buffer, so a fast worker's next write never lands in rows
    that another is still reading."""

    def __init__(self, pool: WorkerPool, width: int):
        self.pool, self.conn = pool, None  # conn: a child's pipe to the parent
        self.rows = shared_array((2, pool.workers, width), np.float64)
        self.rank = 0  # this process's worker number (0: the parent)
        self.active = pool.workers  # workers taking part in this step
        self.calls = 0  # gathers so far in this step

    def start_step(self, active: int) -> None:
        self.active, self.calls = active, 0

    def gather(self, vec: np.ndarray) -> np.ndarray:
        """(active workers, len(vec)): every worker's vec, row k from worker k."""
        rows = self.rows[self.calls % 2, :self.active, :len(vec)]
        self.calls += 1
        rows[self.rank] = vec
        if self.rank == 0:
            for k in range(1, self.active):
                self.pool._expect_sync(k)
            for k in range(1, self.active):
                self.pool._send(k, "go")
        else:
            self.conn.send("sync")
            try:
                go = self.conn.recv()
            except (EOFError, OSError):  # the parent exited
                raise SystemExit(0) from None
            if go != "go":  # None: the pool is stopping mid-step (the parent failed)
                raise SystemExit(0)
        return rows


class WorkerPool:
    """The calling process plus workers - 1 forked children; see the module docstring."""

    def __init__(self, plan, loss, x: np.ndarray, y: np.ndarray, workers: int, batch_size: int,
                 eval_sets=()):
        """x (N, D), y (N,): the training data. eval_sets: more (x, y) pairs, such as the test
        split, that `evaluate` may split across the workers too. The children see all of them
        as they are now: do not modify them in place while the pool runs."""
        if workers < 2:
            raise ValueError(f"a WorkerPool needs at least 2 workers, got {workers}")
        self.plan, self.loss, self.x, self.y = plan, loss, x, y
        self.eval_sets = [(x, y)] + [(a.reshape(len(a), -1), b) for a, b in eval_sets]
        self.preds = shared_array((max(len(b) for _, b in self.eval_sets),), np.int64)
        self.workers = workers
        self.blas_threads = max(1, available_cores() // workers)
        size = plan.flat_params.size
        self.grads = shared_array((workers - 1, size), plan.dtype)  # child k's gradients: row k-1
        self.idx = shared_array((batch_size,), np.int64)  # this step's batch indices
        self.rows = np.empty((batch_size, x.shape[1]), x.dtype)
        self.stochastic = any(step.info.layer.stochastic for step in plan.steps)
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
        return threadpool_limits(self.blas_threads, user_api="blas")

    def gradient(self, idx: np.ndarray) -> tuple[float, int, str | None]:
        """Fill plan.grads with the batch's gradient; (mean loss, correct, first non-finite
        layer if the loss is not finite)."""
        n = len(idx)
        w = min(self.workers, n)
        try:
            return self._gradient(idx, n, w)
        except BaseException:
            self.close()  # children may be waiting mid-step in a batch exchange
            raise

    def _gradient(self, idx, n, w):
        bounds = [i * n // w for i in range(w + 1)]  # worker k: idx[bounds[k]:bounds[k + 1]]
        self.idx[:n] = idx
        if self.exchange is not None:
            self.exchange.start_step(w)
        for k in range(1, w):
            seed = int(self.plan.rng.integers(2**63)) if self.stochastic else None
            self._send(k, ("gradient", bounds[k], bounds[k + 1], n, w, seed))
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

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int,
                 preds: np.ndarray) -> float | None:
        """eval_slice over all of (x, y), split across the workers in whole batches: fills
        preds and returns the loss sum. None, having done nothing, when (x, y) is not one of
        the pool's data sets (then evaluate in one process)."""
        found = self._find(x, y)
        n = len(x)
        if found is None or n == 0:
            return None
        which, start = found
        batches = -(-n // batch)
        w = min(self.workers, batches)
        bounds = [min(n, i * batches // w * batch) for i in range(w + 1)]
        for k in range(1, w):
            self._send(k, ("evaluate", which, start, bounds[k], bounds[k + 1], batch))
        loss_sum = eval_slice(self.plan, self.loss, x, y, 0, bounds[1], batch, preds)
        for k, (part_sum,) in self._replies(w):
            loss_sum += part_sum
            lo, hi = bounds[k], bounds[k + 1]
            preds[lo:hi] = self.preds[lo:hi]
        return loss_sum

    def _find(self, x, y) -> tuple[int, int] | None:
        """(data set, first row) when x and y are the same rows, in the same memory, of one
        of the pool's data sets (the set itself, or a slice of consecutive rows); else None."""
        for i, (a, b) in enumerate(self.eval_sets):
            start = _row_offset(a, x)
            if start is not None and _row_offset(b, y) == start:
                return i, start
        return None

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
            try:
                reply = self.conns[k - 1].recv()
            except (EOFError, OSError):
                self._died(k)
            if reply[0] == "error":
                failure = failure or f"worker process {k} failed: {reply[1]}"
            else:
                yield k, reply
        if failure:
            self.close()
            raise TrainingError(failure + "; train with --workers 1 to run in one process "
                                "(an error there comes with its full context)")

    def _expect_sync(self, k: int) -> None:
        """Wait for child k's "sync" in a batch exchange; its failure or death is raised."""
        try:
            reply = self.conns[k - 1].recv()
        except (EOFError, OSError):
            self._died(k)
        if reply != "sync":
            self.close()
            message = reply[1] if reply and reply[0] == "error" else f"unexpected {reply!r}"
            raise TrainingError(f"worker process {k} failed: {message}; train with --workers "
                                "1 to run in one process (an error there comes with its full "
                                "context)")

    def _died(self, k: int):
        proc = self.procs[k - 1]
        proc.join(timeout=1)
        self.close()
        raise TrainingError(
            f"worker process {k} (pid {proc.pid}) exited unexpectedly (exit code "
            f"{proc.exitcode}); train with --workers 1 to run in one process") from None

    def _serve(self, k: int, conn, parent_ends) -> None:
        """Child k's loop: one slice's gradient per message, until None or the parent is gone."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        for end in parent_ends:  # so that the parent's death closes every pipe
            end.close()
        threadpool_limits(self.blas_threads, user_api="blas")  # for the child's lifetime
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
                    _, lo, hi, n, active, seed = message
                    if self.exchange is not None:
                        self.exchange.start_step(active)
                    if seed is not None:  # a fresh stream for this step's dropout masks
                        plan.rng.bit_generator.state = type(plan.rng.bit_generator)(seed).state
                    loss, correct = slice_gradient(plan, self.loss, self.x, self.y,
                                                   self.idx[lo:hi], rows, (hi - lo) / n)
                    np.copyto(grads, plan.flat_grads)
                    bad = None if math.isfinite(loss) else plan.first_nonfinite()
                    reply = (loss, correct, bad)
                else:  # "evaluate"
                    _, which, start, lo, hi, batch = message
                    x, y = (a[start:] for a in self.eval_sets[which])
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


def _row_offset(whole: np.ndarray, part: np.ndarray) -> int | None:
    """r when part is whole[r:r + len(part)] (same memory and layout), else None."""
    if part.dtype != whole.dtype or part.shape[1:] != whole.shape[1:] or (
            part.strides != whole.strides) or len(part) == 0:
        return None
    gap = part.__array_interface__["data"][0] - whole.__array_interface__["data"][0]
    row = whole.strides[0]
    if row <= 0 or gap % row or not 0 <= gap // row <= len(whole) - len(part):
        return None
    return gap // row


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
            proc.terminate()
            proc.join(timeout=2)
