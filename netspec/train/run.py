"""A training run in a directory: the resolved spec, metrics.jsonl, atomic checkpoints (last
and best), curves.png, report.html, resume, and clean stops on request or on NaN.

    run = Run(spec, splits, out)     # makes a Trainer (netspec/train/trainer.py) unless given one
    run.start()                      # or run.resume(): continue from checkpoints/last.npz
    run.fit(on_step, on_epoch, should_stop)
    run.close()                      # stops the trainer's workers, unlocks the directory

One writer per run directory: start and resume lock it (fsio.run_lock) before they write
anything, and refuse (OutputError) while another process holds it; the lock goes with close()
or with the process. A refused start or resume writes nothing. Nothing here prints; progress
goes to callbacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from netspec import checkpoint
from netspec.errors import CheckpointError, TrainingError
from netspec.fsio import (
    atomic_write,
    check_new_run_dir,
    check_run_dir,
    claim_run_dir,
    make_dirs,
    run_lock,
)
from netspec.plan.options import PlanOptions
from netspec.train.inputs import data_record, write_data_record
from netspec.train.trainer import Trainer

EXCLUDED_FROM_RESUME_CHECK = ("train.epochs",)  # may change when resuming (schedule allowing)


@dataclass
class Run:
    """A training run in a directory: spec.yaml, metrics.jsonl, checkpoints/, curves.png."""

    spec: object
    splits: dict
    out: Path
    trainer: Trainer = None
    history: list = field(default_factory=list)
    best: float = -1.0
    workers: int | str | None = None  # for the Trainer made here: 1, N or 'auto'
    options: PlanOptions | None = None  # for the Trainer made here (workers: as above)
    init: dict | None = None  # where the starting weights came from (init_from)
    _lock: object = field(default=None, init=False, repr=False)  # fsio.RunLock while it writes

    def __post_init__(self):
        self.out = Path(self.out)
        self.trainer = self.trainer or Trainer(self.spec, self.splits, workers=self.workers,
                                               options=self.options)

    @property
    def last_path(self) -> Path:
        return self.out / "checkpoints" / "last.npz"

    @property
    def best_path(self) -> Path:
        return self.out / "checkpoints" / "best.npz"

    def start(self) -> None:
        """Create the run directory for a new run (see fsio.claim_run_dir) and lock it; refuse
        a directory holding a run or files netspec did not write, or one another process
        writes, before writing anything."""
        check_new_run_dir(self.out)
        self._refuse_a_run_there()
        make_dirs(self.out)
        self._lock_dir()
        try:
            self._refuse_a_run_there()  # one may have finished while we waited for the lock
            claim_run_dir(self.out, _version())
            make_dirs(self.out / "checkpoints")
            atomic_write(self.out / "spec.yaml", self.spec.to_yaml())
            atomic_write(self.out / "machine.json", json.dumps(machine_info(), indent=1) + "\n")
            write_data_record(self.out, self.splits)  # data.json: where the data came from
        except BaseException:
            self.close_lock()
            raise

    def _refuse_a_run_there(self) -> None:
        if self.last_path.exists() or (self.out / "metrics.jsonl").exists():
            raise CheckpointError(f"{self.out} already holds a run; resume it with "
                                  f"--resume {self.out}, or choose another --out")

    def _lock_dir(self) -> None:
        if self._lock is None:
            self._lock = run_lock(self.out)

    def close_lock(self) -> None:
        """Let other processes write the run directory again."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def close(self) -> None:
        """Stop the trainer's worker processes and unlock the run directory."""
        try:
            self.trainer.close()
        finally:
            self.close_lock()

    def init_from(self, path) -> checkpoint.Initial:
        """Start from the weights in the checkpoint at `path`, matched by name and shape (see
        checkpoint.initial_state); the others keep their initialisation. Recorded in the
        run's checkpoints (meta "init")."""
        ckpt = checkpoint.load(path)
        plan = self.trainer.plan
        mine = {**plan.params, **plan.buffers}
        found = checkpoint.initial_state(ckpt.state, {k: v.shape for k, v in mine.items()},
                                         str(path))
        for name in found.loaded:
            mine[name][...] = ckpt.state[name]
        self.init = {"from": str(path), "loaded": len(found.loaded), "fresh": found.fresh}
        return found

    def resume(self) -> None:
        """Continue from checkpoints/last.npz; the spec may differ only in train.epochs, which
        must not be fewer than the epochs done. Nothing is written before every check passed."""
        check_run_dir(self.out)
        self._resumable()  # before the lock, so that a refused resume writes nothing at all
        self._lock_dir()
        try:
            ckpt = self._resumable()  # again: the last writer may have saved since
            self.trainer.restore(ckpt, str(self.last_path))
            self.history = ckpt.meta.get("history", [])
            self.best = ckpt.meta.get("best", -1.0)
            self._write_metrics()  # drops lines written after the checkpoint
            atomic_write(self.out / "spec.yaml", self.spec.to_yaml())
        except BaseException:
            self.close_lock()
            raise

    def _resumable(self) -> checkpoint.Checkpoint:
        """The last checkpoint, if this spec may continue from it; else CheckpointError."""
        ckpt = checkpoint.load(self.last_path)
        changes = spec_changes_since(ckpt, self.spec)
        if changes:
            raise CheckpointError(
                f"cannot resume {self.out}: the spec changed since the checkpoint "
                f"({'; '.join(changes)}); only train.epochs may change when resuming")
        done = int(ckpt.meta.get("progress", {}).get("epoch", 0))
        if self.spec.train.epochs < done:
            raise CheckpointError(
                f"cannot resume {self.out} with train.epochs {self.spec.train.epochs}: the run "
                f"has done {done} epochs already. Give at least {done} (--set "
                f"train.epochs={done} only writes its report again), or start a new run")
        self._check_length(ckpt.spec_data.get("train", {}).get("epochs"))
        return ckpt

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

    def fit(self, on_step=None, on_epoch=None, should_stop=None, until: int | None = None,
            unlock: bool = True) -> bool:
        """Train to epoch `until` (default spec.train.epochs); False if stopped (state saved).
        The directory stays locked while it trains; with `unlock` (the default) the lock goes
        when fit returns, since a run that does not train writes nothing (another fit locks
        it again)."""
        self._lock_dir()
        try:
            return self._fit(on_step, on_epoch, should_stop, until)
        finally:
            if unlock:
                self.close_lock()

    def _fit(self, on_step, on_epoch, should_stop, until) -> bool:
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
            record = t.epoch_record(epoch, stats)  # with the val and test evaluations
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
                "best": self.best, "spec": self.spec.resolved(),
                "spec_sha256": self.spec.digest(EXCLUDED_FROM_RESUME_CHECK),
                # how inputs were normalised (netspec export records it in the ONNX file),
                # and the data's classes and preprocessing (predict reads them)
                "normalize": (self.splits.record() if hasattr(self.splits, "record") else
                              {k: getattr(self.splits, k, None) for k in ("normalize", "mean",
                                                                          "std")}),
                "data": data_record(self.splits)}
        if self.init is not None:
            meta["init"] = self.init
        checkpoint.save(path, state, optim, meta)


def spec_changes_since(ckpt, spec) -> list[str]:
    """How `spec` differs from the spec a checkpoint was trained with, train.epochs aside
    ([] when they are the same run). The digests decide at once when they agree; else the
    resolved forms are compared, so a checkpoint that stored its spec as written (before
    specs were stored resolved) still matches the same spec."""
    if ckpt.meta.get("spec_sha256") == spec.digest(EXCLUDED_FROM_RESUME_CHECK):
        return []
    if not ckpt.spec_data:
        return ["(the checkpoint has no spec)"]
    from netspec.spec.model import resolved_data

    old, new = resolved_data(ckpt.spec_data), spec.resolved()
    for data in (old, new):
        data.get("train", {}).pop("epochs", None)
    return checkpoint.spec_changes(old, new)


def machine_info() -> dict:
    """The machine this process runs on: CPU model, cores, system, Python, NumPy, netspec (a
    run's machine.json, written when it starts)."""
    import os
    import platform

    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(terse=True),
            "python": platform.python_version(), "numpy": np.__version__,
            "netspec": _version()}


def _version() -> str:
    from netspec.version import __version__

    return __version__


def score(record: dict) -> float:
    """What 'best' means for an epoch record: validation accuracy if any, else test accuracy."""
    return record.get("val_acc", record.get("test_acc", -1.0))
