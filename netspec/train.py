"""The generic trainer and the run directory it leaves behind.

    trainer = Trainer(spec, splits)            # splits from netspec.data.prepare(...)
    for epoch in range(trainer.epoch, spec.train.epochs):
        stats = trainer.train_epoch()          # one pass over shuffled training batches
        test = trainer.evaluate(*splits["test"], split="test")  # split: workers may share it

`Run` wraps a Trainer with a run directory: the resolved spec, metrics.jsonl, atomic
checkpoints (last and best), curves.png, resume, and clean stops on request or on NaN.
With `workers` > 1 each batch, and each evaluation of a split, is shared by worker processes
(netspec/parallel.py); call `trainer.close()` to stop them. Nothing here prints; progress goes to
callbacks.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netspec import checkpoint
from netspec.errors import CheckpointError, DataError, TrainingError
from netspec.fsio import atomic_write, check_run_dir, claim_run_dir, make_dirs
from netspec.parallel import WorkerPool, eval_slice, resolve_workers, slice_gradient
from netspec.plan import compile

EXCLUDED_FROM_RESUME_CHECK = ("train.epochs",)  # may change when resuming (schedule allowing)


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

    def __init__(self, spec, splits: dict, dtype="float32", plan=None, workers: int | str = 1):
        """workers: processes sharing each batch (1, N, or 'auto'; see netspec.parallel)."""
        self.spec = spec
        self.workers, self.workers_why = resolve_workers(workers, spec.infos)
        self.pool = None  # the WorkerPool, started by the first epoch when workers > 1
        self.plan = plan or compile(spec, dtype)
        self.optimizer = spec.train.optimizer.build(self.plan.params)
        self.rng = self.plan.rng  # the one Generator: init (already drawn), then the shuffles
        self.splits = splits
        self.x, self.y = splits["train"]
        self.x = self.x.reshape(len(self.x), -1)  # (N, D): one contiguous row per sample
        self.progress = _Progress()
        check_labels(spec, splits)
        self._check_batches(spec.train.batch_size, len(self.x))

    def _check_batches(self, batch: int, n: int) -> None:
        """DataError unless every training batch is usable: the batch size is at most the
        training set, and each batchnorm sees more than one value per channel in every batch
        (the last one included), as PyTorch requires."""
        if batch > n:
            raise DataError(f"train.batch_size {batch:,} is larger than the training set "
                            f"({n:,} samples), so each epoch would be a single step of {n:,}; "
                            f"set train.batch_size to at most {n:,}")
        smallest = min(batch, n % batch or batch)  # the last batch may be smaller
        for info in self.spec.infos:
            if not info.layer.couples_batch:
                continue
            positions = math.prod(info.in_shape[1:]) if len(info.in_shape) == 3 else 1
            if smallest * positions <= 1:
                which = ("each batch holds" if smallest == batch else
                         f"the last training batch would hold {smallest} of {n:,} samples, so it "
                         "holds")
                raise DataError(
                    f"{which} a single value per channel at {info.type} '{info.name}' "
                    f"(input {tuple(info.in_shape)}), and batchnorm "
                    "needs more than one to normalise; change train.batch_size "
                    f"(e.g. to {batch + 1})")

    def start_workers(self) -> None:
        """Fork the worker processes now (else the first epoch does); no-op for 1 worker."""
        if self.workers > 1 and self.pool is None:
            others = {k: v for k, v in self.splits.items() if k != "train"}
            self.pool = WorkerPool(self.plan, self.spec.loss, self.x, self.y, self.workers,
                                   self.spec.train.batch_size, eval_sets=others)

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
              self.pool.blas_limit() if self.pool else nullcontext()):
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
                loss, correct, bad = self.pool.gradient(idx)
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

    def _diverged(self, loss, step, layer):
        where = (f"the first non-finite output is at layer '{layer}'" if layer
                 else "every layer output is finite, so the loss itself overflowed")
        raise TrainingError(
            f"loss became {loss} at epoch {self.progress.epoch + 1}, step {step + 1}; {where}. "
            f"Try a lower learning rate (train.optimizer.lr is {self.spec.train.optimizer.lr:g})")

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int | None = None,
                 split: str | None = None) -> Evaluation:
        """Loss, accuracy and predictions in eval mode, in order, batch by batch.

        split: the name of the trainer's split whose first len(x) rows (x, y) are, e.g.
        evaluate(*splits["test"], split="test"); with worker processes running they then
        share the batches (the same results, up to rounding), since they hold the splits.
        """
        batch = batch_size or self.spec.train.eval_batch_size
        x = x.reshape(len(x), -1)
        preds = np.empty(len(x), np.int64)
        start = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # diverged: a bad score
            if self.pool is not None and split is not None:
                with self.pool.blas_limit():
                    loss_sum = self.pool.evaluate(split, len(x), batch, preds)
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


@dataclass
class Run:
    """A training run in a directory: spec.yaml, metrics.jsonl, checkpoints/, curves.png."""

    spec: object
    splits: dict
    out: Path
    trainer: Trainer = None
    history: list = field(default_factory=list)
    best: float = -1.0
    workers: int | str = 1  # for the Trainer made here: 1, N or 'auto'

    def __post_init__(self):
        self.out = Path(self.out)
        self.trainer = self.trainer or Trainer(self.spec, self.splits, workers=self.workers)

    @property
    def last_path(self) -> Path:
        return self.out / "checkpoints" / "last.npz"

    @property
    def best_path(self) -> Path:
        return self.out / "checkpoints" / "best.npz"

    def start(self) -> None:
        """Create the run directory for a new run (see fsio.claim_run_dir); refuse to overwrite
        a run that has a checkpoint, or a directory holding files netspec did not write."""
        claim_run_dir(self.out, _version())
        if self.last_path.exists() or (self.out / "metrics.jsonl").exists():
            raise CheckpointError(f"{self.out} already holds a run; resume it with "
                                  f"--resume {self.out}, or choose another --out")
        make_dirs(self.out / "checkpoints")
        atomic_write(self.out / "spec.yaml", self.spec.to_yaml())

    def resume(self) -> None:
        """Continue from checkpoints/last.npz; the spec may differ only in train.epochs."""
        check_run_dir(self.out)
        ckpt = checkpoint.load(self.last_path)
        mine = self.spec.digest(EXCLUDED_FROM_RESUME_CHECK)
        if ckpt.meta.get("spec_sha256") != mine:
            old = dict(ckpt.spec_data)
            new = self.spec.model_dump(mode="json")
            for data in (old, new):
                data.get("train", {}).pop("epochs", None)
            changes = checkpoint.spec_changes(old, new) or ["(the checkpoint has no spec)"]
            raise CheckpointError(
                f"cannot resume {self.out}: the spec changed since the checkpoint "
                f"({'; '.join(changes)}); only train.epochs may change when resuming")
        self._check_length(ckpt.spec_data.get("train", {}).get("epochs"))
        self.trainer.restore(ckpt, str(self.last_path))
        self.history = ckpt.meta.get("history", [])
        self.best = ckpt.meta.get("best", -1.0)
        self._write_metrics()  # drops lines written after the checkpoint
        atomic_write(self.out / "spec.yaml", self.spec.to_yaml())

    def _write_metrics(self) -> None:
        """metrics.jsonl from the history, replaced atomically (a full disk loses no line)."""
        atomic_write(self.out / "metrics.jsonl",
                     "".join(json.dumps(h) + "\n" for h in self.history))

    def _check_length(self, before: int | None) -> None:
        """A new train.epochs must not change the learning rates of the run (see
        Schedule.depends_on_length)."""
        t = self.spec.train
        if before is None or before == t.epochs or not t.schedule.depends_on_length():
            return
        raise CheckpointError(
            f"cannot resume {self.out} with train.epochs {t.epochs}: the run started with "
            f"{before}, and its {t.schedule.type} schedule sets every epoch's learning rate "
            f"from the total number of epochs, so the rest of the run would leave the curve it "
            f"started on. Resume with train.epochs {before} (--set train.epochs={before}), or "
            f"start a new run with {t.epochs} epochs")

    def fit(self, on_step=None, on_epoch=None, should_stop=None, until: int | None = None) -> bool:
        """Train to epoch `until` (default spec.train.epochs); False if stopped (state saved)."""
        t = self.trainer
        until = self.spec.train.epochs if until is None else min(until, self.spec.train.epochs)
        while t.epoch < until:
            epoch = t.epoch
            try:
                stats = t.train_epoch(on_step, should_stop)
            except TrainingError as e:
                kept = (f"; the last good checkpoint is {self.last_path}"
                        if self.last_path.exists() else "")
                raise TrainingError(str(e) + kept) from None
            if stats.stopped:
                self.save(self.last_path)
                return False
            lr = t.lr(epoch, t.steps_per_epoch - 1)  # the epoch's last (per-step schedules)
            record = {"epoch": epoch + 1, "lr": lr, "train_loss": stats.loss,
                      "train_acc": stats.accuracy, "train_seconds": stats.seconds,
                      "images_per_second": stats.images / max(stats.seconds, 1e-9),
                      "workers": t.workers}
            eval_seconds = 0.0
            for split in ("val", "test"):
                if split in self.splits:
                    ev = t.evaluate(*self.splits[split], split=split)
                    record[f"{split}_loss"], record[f"{split}_acc"] = ev.loss, ev.accuracy
                    eval_seconds += ev.seconds
            record["eval_seconds"] = eval_seconds
            self.history.append(record)
            if score(record) > self.best:
                self.best = score(record)
                self.save(self.best_path)
            self.save(self.last_path)
            self._write_metrics()  # after the checkpoint it describes
            if on_epoch is not None:
                on_epoch(record)
        return True

    def save(self, path: Path) -> None:
        state, optim, progress = self.trainer.state()
        meta = {"netspec_version": _version(), "progress": progress, "history": self.history,
                "best": self.best, "spec": self.spec.model_dump(mode="json"),
                "spec_sha256": self.spec.digest(EXCLUDED_FROM_RESUME_CHECK),
                # how inputs were normalised (netspec export records it in the ONNX file)
                "normalize": {k: getattr(self.splits, k, None) for k in ("normalize", "mean",
                                                                         "std")}}
        checkpoint.save(path, state, optim, meta)

    def plot(self) -> Path | None:
        """Write curves.png from the history (None when there is nothing to plot yet)."""
        if not self.history:
            return None
        from netspec.plots import plot_curves

        return plot_curves(self.history, self.out / "curves.png", title=self.spec.name)

    def report(self) -> Path:
        """Write report.html (netspec/report.py), with an eval pass over the test split."""
        from netspec.report import write_report

        return write_report(self.out, self.splits)


def check_labels(spec, splits: dict) -> None:
    """DataError unless every label of every split is a class the network outputs (0..K-1)."""
    last = spec.infos[-1]
    k = math.prod(last.out_shape)
    for split, (_, y) in splits.items():
        bad = np.unique(y[(y < 0) | (y >= k)])
        if bad.size == 0:
            continue
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        count = int(np.count_nonzero((y < 0) | (y >= k)))
        need = int(max(bad.max() + 1, k))
        given = (f"data.num_classes is {spec.data.num_classes} and " if spec.data.num_classes
                 else "")
        raise DataError(
            f"{spec.data.dataset}: the {split} split has labels {shown} ({count:,} samples), but "
            f"{given}the network ends with {k} outputs (its last layer, {last.type} "
            f"'{last.name}'), for classes 0..{k - 1}; "
            + (f"set data.num_classes and the last layer's width to {need}" if bad.min() >= 0
               else "negative labels are never valid: fix the dataset's labels"))


def _version() -> str:
    from netspec import __version__

    return __version__


def score(record: dict) -> float:
    """What 'best' means for an epoch record: validation accuracy if any, else test accuracy."""
    return record.get("val_acc", record.get("test_acc", -1.0))


def check_dataset(spec, ds) -> None:
    """DataError unless the dataset's samples and classes fit the spec's input and output."""
    sample, shape = ds.input_shape, tuple(spec.input.shape)
    if math.prod(sample) != math.prod(shape) or (len(shape) == 3 and shape != sample):
        raise DataError(f"{ds.name} samples have shape {list(sample)} but input.shape is "
                        f"{list(shape)}; set input.shape to {list(sample)}")
    classes = spec.infos[-1].out_shape
    if spec.data.classes is None and classes != (ds.num_classes,):
        raise DataError(f"{ds.name} has {ds.num_classes} classes but the network ends with "
                        f"shape {tuple(classes)}; set out_features: {ds.num_classes} on the "
                        "last layer (or data.num_classes)")


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts: rows are true classes, columns predicted ones."""
    flat = labels.astype(np.int64) * classes + predictions
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)
