"""One sweep trial, as it runs on a Dask worker: an ordinary training run in its own directory.

`run_trial` trains a trial's spec with netspec.train.run.Run, as `netspec train --workers 1
--out RUN_DIR` would (or `--resume RUN_DIR` when the directory holds a checkpoint), in one
process with one BLAS thread. `dask_trial` connects it to the sweep: progress goes out as
worker events on the sweep's topic, and a stop request comes in as a Dask Event.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from distributed import Event, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from netspec.errors import NetspecError
from netspec.viz.plots import plot_run
from netspec.viz.report import write_report

STOP_POLL_SECONDS = 0.5  # how often a running trial asks the scheduler whether to stop
_SPLITS: dict = {}  # this worker process's last prepared dataset, reused by its next trial


def dask_trial(task: dict) -> dict:
    """Run one trial on this Dask worker; returns its summary row (see run_trial)."""
    worker = get_worker()
    stop = Event(task["stop"])
    me = {"trial": task["trial"], "worker": worker.address, "pid": os.getpid()}
    polled = {"at": -STOP_POLL_SECONDS, "stop": False}

    def publish(msg: dict) -> None:
        worker.log_event(task["topic"], {**me, **msg})

    def should_stop() -> bool:
        now = time.monotonic()
        if now - polled["at"] >= STOP_POLL_SECONDS:
            polled["at"], polled["stop"] = now, stop.is_set()
        return polled["stop"]

    return {**run_trial(task, publish, should_stop), "worker": me["worker"], "pid": me["pid"]}


def run_trial(task: dict, publish=None, should_stop=None) -> dict:
    """Train task["options"] applied to task["text"] in task["run_dir"].

    Returns status (done, interrupted, failed or cancelled), message, note, and the scores
    of netspec.sweep.results.scores. A trial's own failure (bad data, NaN, a damaged
    checkpoint, a full disk) is a failed row; only bugs raise.
    """
    from threadpoolctl import threadpool_limits

    from netspec.spec.model import loads
    from netspec.sweep.results import scores
    from netspec.train.inputs import with_classes
    from netspec.train.run import Run

    publish = publish or (lambda msg: None)
    if should_stop is not None and should_stop():
        return {"status": "cancelled", "note": "stopped before it ran"}
    publish({"event": "running"})
    metric, higher = task["metric"], task["higher"]
    row, run = {"status": "failed", "message": "", "note": ""}, None
    with threadpool_limits(1):  # not blas.limit: trials keep the GEMM paths (no Winograd)
        try:
            spec = loads(task["text"], task["file"], task["options"])
            splits = _splits(spec, task["data_dir"])
            spec = with_classes(spec, splits.dataset)  # the class names travel with the run
            run = Run(spec, splits, Path(task["run_dir"]), workers=1)
            if run.last_path.exists():
                run.resume()
                row["note"] = resumed_note(run.trainer.progress)
                publish({"event": "resumed", "note": row["note"], "epoch": run.trainer.epoch})
            else:
                run.start()

            def on_epoch(record):
                publish({"event": "epoch", "epoch": record["epoch"],
                         **scores(run.history, metric, higher)})

            done = run.fit(on_epoch=on_epoch, should_stop=should_stop)
            row["status"] = "done" if done else "interrupted"
        except (NetspecError, OSError) as e:
            row["message"] = _message(e, task["run_dir"])
        if run is not None and run.history:  # curves.png and report.html, as `netspec train`
            writers = [lambda: plot_run(run)] + (
                [lambda: write_report(run.out, run.splits)] if row["status"] != "failed" else [])
            for write in writers:  # failing to write one is only a note
                try:
                    write()
                except (NetspecError, OSError) as e:
                    row["note"] = "; ".join(filter(None, [row["note"], _message(e, run.out)]))
    if run is not None:
        run.close()  # fit unlocked the run directory already, even if it raised
    row.update(scores(run.history if run is not None else [], metric, higher))
    return row


def _message(e: Exception, where) -> str:
    if isinstance(e, NetspecError):
        return "; ".join(str(p) for p in e.problems)
    return f"{e.filename or where}: {e.strerror or e}"


def resumed_note(progress) -> str:
    if progress.step:
        return f"resumed in epoch {progress.epoch + 1} at step {progress.step}"
    return f"resumed after epoch {progress.epoch}"


def _splits(spec, data_dir):
    """The spec's dataset, prepared; kept for the next trial of this process if it matches.
    Images are decoded in this process (a Dask worker may not fork a pool), or found in the
    decode cache."""
    import json

    from netspec.data.checks import check_dataset
    from netspec.train.inputs import load_splits

    key = (json.dumps(spec.data.model_dump(mode="json", exclude={"augment"}), sort_keys=True),
           tuple(spec.input.shape), data_dir)
    if key not in _SPLITS:
        _SPLITS.clear()  # one dataset in memory at a time
        _SPLITS[key] = load_splits(spec, data_dir, workers=1)
    splits = _SPLITS[key]
    check_dataset(spec, splits.dataset)
    return splits


class IgnoreSigint(WorkerPlugin):
    """Workers of the embedded cluster ignore Ctrl-C: the sweep stops them cleanly instead."""

    def setup(self, worker):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
