"""The generic trainer: batches, steps, evaluation, training state for checkpoints.

    trainer = Trainer(spec, splits)            # splits from netspec.data.prepare(...)
    for epoch in range(trainer.epoch, spec.train.epochs):
        stats = trainer.train_epoch()          # one pass over shuffled training batches
        test = trainer.evaluate(*splits["test"])  # eval mode, in batches

`Run` (netspec/train/run.py) wraps a Trainer with a run directory.
With `workers` > 1 each batch, and each evaluation, is shared by worker processes
(netspec/train/pool.py); call `trainer.close()` to stop them. Nothing here prints; progress goes to
callbacks.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from netspec import checkpoint
from netspec.data.augment import Augmenter
from netspec.data.checks import check_batches, check_labels
from netspec.errors import CheckpointError, TrainingError
from netspec.kernels import blas
from netspec.plan.compiler import compile
from netspec.plan.options import PlanOptions, with_workers
from netspec.train.pool import WorkerPool, eval_slice, slice_gradient


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: np.ndarray  # (N,) predicted class per sample
    seconds: float


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    seconds: float  # the training pass alone
    images: int
    stopped: bool = False  # a stop was requested before the epoch finished


@dataclass
class _Progress:
    """Where the current epoch stands; saved in checkpoints so a run resumes mid-epoch."""

    epoch: int = 0  # epochs fully completed
    step: int = 0  # batches done in the current epoch
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    rng_at_epoch_start: dict | None = None  # Generator state before this epoch's shuffle


class Trainer:
    """Trains a compiled plan with the spec's optimizer, schedule, batch size and seed."""

    def __init__(self, spec, splits: dict, dtype="float32", plan=None,
                 workers: int | str | None = None, options: PlanOptions | None = None):
        """options: the PlanOptions of the plan made here (netspec/plan/options.py); workers:
        shorthand for options.workers (1, N or 'auto'). A given plan brings its own."""
        self.spec = spec
        if plan is None:
            if workers is not None:
                options = with_workers(options, workers)
            plan = compile(spec, dtype, options)
        elif workers is not None or options is not None:
            raise ValueError("a given plan brings its own options; build it with "
                             "compile(spec, dtype, options) instead")
        self.plan = plan
        self.workers, self.workers_why = plan.options.workers, plan.options.workers_why
        self.pool = None  # the WorkerPool, started by the first epoch when workers > 1
        self.optimizer = spec.train.optimizer.build(self.plan.params)
        self.rng = self.plan.rng  # the one Generator: init (already drawn), then the shuffles
        self.splits = splits
        self.x, self.y = splits["train"]
        self.plan.augment = self._augmenter(spec, splits)  # slice_gradient applies it
        self.x = self.x.reshape(len(self.x), -1)  # (N, D): one contiguous row per sample
        self.progress = _Progress()
        check_labels(spec, splits)
        check_batches(spec, spec.train.batch_size, len(self.x))

    def _augmenter(self, spec, splits):
        """The Augmenter of spec.data.augment for these training rows, or None."""
        if spec.data.augment is None:
            return None
        x = splits["train"][0]
        shape = tuple(x.shape[1:]) if x.ndim == 4 else tuple(spec.input.shape)
        steps = math.ceil(len(x) / spec.train.batch_size)
        return Augmenter(spec.data.augment, shape, spec.seed, steps, getattr(splits, "norm", None))

    def start_workers(self) -> None:
        """Fork the worker processes now (else the first epoch does); no-op for 1 worker."""
        if self.workers > 1 and self.pool is None:
            # evaluations pass the workers up to as many rows as the largest split but train
            others = [len(y) for k, (_, y) in self.splits.items() if k != "train"]
            rows = max(others, default=self.spec.train.eval_batch_size * self.workers)
            self.pool = WorkerPool(self.plan, self.spec.loss, self.x, self.y, self.workers,
                                   self.spec.train.batch_size, eval_rows=rows)

    def blas_limit(self):
        """Context: BLAS at the plan's threads per process, when the plan's options say so
        (worker processes, or threads asked for); else BLAS as it is."""
        o = self.plan.options
        return blas.limit(o.blas_threads) if o.limit_blas else nullcontext()

    def close(self) -> None:
        """Stop the worker processes, if any (training again restarts them)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    @property
    def epoch(self) -> int:
        return self.progress.epoch

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.x) / self.spec.train.batch_size)

    def lr(self, epoch: int, step: int = 0) -> float:
        """The learning rate for batch `step` of epoch `epoch` (both 0-based)."""
        t, spe = self.spec.train, self.steps_per_epoch
        at, total = t.schedule.position(epoch, step, spe, t.epochs)
        return t.schedule.lr(at, t.optimizer.lr, total, spe)

    def train_epoch(self, on_step=None, should_stop=None) -> EpochStats:
        """One pass over the training set in shuffled batches (continues a partial epoch).

        on_step(step, steps, loss, accuracy) is called after every batch; should_stop() is
        polled between batches and ends the epoch early, leaving a resumable state.
        """
        p = self.progress
        batch, n = self.spec.train.batch_size, len(self.x)
        steps = math.ceil(n / batch)
        if p.rng_at_epoch_start is None:
            p.rng_at_epoch_start = self.rng.bit_generator.state
        state_now = self.rng.bit_generator.state
        self.rng.bit_generator.state = p.rng_at_epoch_start
        order = self.rng.permutation(n)  # the same order again when resuming mid-epoch
        if p.step:
            self.rng.bit_generator.state = state_now
        x_rows = np.empty((batch, self.x.shape[1]), self.x.dtype)
        self.start_workers()
        start = time.perf_counter()
        with (np.errstate(over="ignore", invalid="ignore", divide="ignore"),  # reported below
              self.blas_limit()):
            stopped = self._run_steps(order, x_rows, steps, on_step, should_stop)
        p.seconds += time.perf_counter() - start
        stats = EpochStats(p.loss_sum / max(p.seen, 1), p.correct / max(p.seen, 1),
                           p.seconds, p.seen, stopped)
        if not stopped:
            self.progress = _Progress(epoch=p.epoch + 1)
        return stats

    def _run_steps(self, order, x_rows, steps, on_step, should_stop) -> bool:
        """The hot loop: batches p.step..steps-1 of this epoch; True if asked to stop."""
        p, plan = self.progress, self.plan
        batch = self.spec.train.batch_size
        per_step = self.spec.train.schedule.interval == "step"
        lr = self.lr(p.epoch)
        for step in range(p.step, steps):
            if per_step:
                lr = self.lr(p.epoch, step)
            if should_stop is not None and should_stop():
                return True
            idx = order[step * batch:(step + 1) * batch]
            plan.noise.step, plan.noise.offset = p.epoch * steps + step, 0  # dropout's key
            if self.pool is None:  # forward, loss and backward of the batch: fills plan.grads
                loss, correct = slice_gradient(plan, self.spec.loss, self.x, self.y, idx, x_rows)
                bad = None if math.isfinite(loss) else plan.first_nonfinite()
            else:  # the same, split across the worker processes
                loss, correct, bad = self._in_pool(self.pool.gradient, idx)
            if not math.isfinite(loss):
                self._diverged(loss, step, bad)
            self.optimizer.step(plan.grads, lr)
            p.loss_sum += loss * len(idx)
            p.correct += correct
            p.seen += len(idx)
            p.step = step + 1
            if on_step is not None:
                on_step(p.step, steps, p.loss_sum / p.seen, p.correct / p.seen)
        return False

    def epoch_record(self, epoch: int, stats: EpochStats) -> dict:
        """The metrics.jsonl record of a finished epoch (0-based `epoch`): its learning rate
        and training figures, and the loss and accuracy of each "val" and "test" split."""
        lr = self.lr(epoch, self.steps_per_epoch - 1)  # the epoch's last (per-step schedules)
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": stats.loss,
                  "train_acc": stats.accuracy, "train_seconds": stats.seconds,
                  "images_per_second": stats.images / max(stats.seconds, 1e-9),
                  "workers": self.workers}
        eval_seconds = 0.0
        for split in ("val", "test"):
            if split in self.splits:
                ev = self.evaluate(*self.splits[split], split=split)
                record[f"{split}_loss"], record[f"{split}_acc"] = ev.loss, ev.accuracy
                eval_seconds += ev.seconds
        record["eval_seconds"] = eval_seconds
        return record

    def _diverged(self, loss, step, layer):
        where = (f"the first non-finite output is at layer '{layer}'" if layer
                 else "every layer output is finite, so the loss itself overflowed")
        raise TrainingError(
            f"loss became {loss} at epoch {self.progress.epoch + 1}, step {step + 1}; {where}. "
            f"Try a lower learning rate (train.optimizer.lr is {self.spec.train.optimizer.lr:g})")

    def _in_pool(self, method, *args):
        """method(*args) of the pool; a pool that fails has stopped itself: let it go (the next
        epoch starts another)."""
        try:
            return method(*args)
        except BaseException:
            self.close()
            raise

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int | None = None,
                 split: str | None = None) -> Evaluation:
        """Loss, accuracy and predictions of x (N, ...) with labels y (N,) in eval mode, in
        order, batch by batch. With worker processes running they share the batches (the same
        results, up to rounding). split: accepted and unused (callers may name the split x comes
        from); the data evaluated is always x.
        """
        batch = batch_size or self.spec.train.eval_batch_size
        x = x.reshape(len(x), -1)
        preds = np.empty(len(x), np.int64)
        start = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # diverged: a bad score
            if self.pool is not None:
                with self.pool.blas_limit():
                    loss_sum = self._in_pool(self.pool.evaluate, x, y, batch, preds)
            else:
                loss_sum = eval_slice(self.plan, self.spec.loss, x, y, 0, len(x), batch, preds)
        seconds = time.perf_counter() - start
        return Evaluation(loss_sum / max(len(x), 1), float(np.mean(preds == y)), preds, seconds)

    # ------------------------------------------------------------ state

    def state(self) -> tuple[dict, dict, dict]:
        """(parameters and buffers, optimizer state, progress) for a checkpoint."""
        p = self.progress
        progress = {"epoch": p.epoch, "step": p.step, "loss_sum": p.loss_sum,
                    "correct": p.correct, "seen": p.seen, "seconds": p.seconds,
                    "rng_at_epoch_start": p.rng_at_epoch_start,
                    "rng": self.rng.bit_generator.state}
        return self.plan.state_dict(), self.optimizer.state_dict(), progress

    def restore(self, ckpt: checkpoint.Checkpoint, source: str) -> None:
        """Continue from a checkpoint's parameters, optimizer state and progress."""
        version = ckpt.meta.get("format", 1)
        stochastic = any(i.layer.type == "dropout" for i in self.spec.infos)
        if version > checkpoint.FORMAT or (version < checkpoint.FORMAT and stochastic):
            raise CheckpointError(
                f"cannot resume from {source}: it has checkpoint format {version} (written by "
                f"netspec {ckpt.meta.get('netspec_version', '?')}), this netspec writes format "
                f"{checkpoint.FORMAT}. "
                + (checkpoint.FORMAT_CHANGES.get(version, "") if version < checkpoint.FORMAT
                   else "Use the newer netspec that wrote it.")
                + " Start a new run, or finish this one with the netspec that started it; "
                "its weights still load in `netspec eval`")
        self.plan.load_state_dict(ckpt.state, source)
        try:
            self.optimizer.load_state_dict(ckpt.optimizer)
            progress = dict(ckpt.meta["progress"])
            self.rng.bit_generator.state = progress.pop("rng")
            self.progress = _Progress(**progress)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{source} has incomplete training state ({e}); "
                                  "start a new run") from None


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts: rows are true classes, columns predicted ones."""
    flat = labels.astype(np.int64) * classes + predictions
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)

