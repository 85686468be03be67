"""Sweeps: one spec trained over a grid of overrides times seeds, the trials run by Dask.

    result = netspec.sweep.run("specs/lenet.yaml", {"train.optimizer.lr": [0.01, 0.05]},
                               seeds=[0, 1], out="sweeps/lenet-lr")

Every trial is an ordinary training run (netspec.train.run.Run, one process, one BLAS thread) in its
own run directory `<out>/<key>`, where key is a short hash of the trial's overrides and seed.
Every trial's resolved spec is validated before anything is submitted. A rerun skips finished
trials and resumes interrupted ones from their checkpoints. Without a `client`, an embedded
LocalCluster on 127.0.0.1 runs one single-threaded worker process per core. The grid and
the trials' specs are in grid.py, a trial's run on a worker in trial.py, the summary files and
the plot in results.py. Nothing here prints; progress goes to the `on_update` callback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from netspec.errors import NetspecError, OutputError, Problem, did_you_mean
from netspec.sweep.grid import Trial, as_text, canonical, parse_params, resolve, trials

__all__ = ["SweepError", "SweepResult", "Trial", "connect", "local_client", "parse_params",
           "run", "trials"]

EXTRA = "pip install 'netspec[sweep]'"
FINAL = ("done", "failed", "interrupted", "cancelled")  # states a trial does not leave
SWEEP_FORMAT = 1  # sweep.json's "netspec_sweep": what marks a directory as a netspec sweep


class SweepError(NetspecError):
    """A sweep cannot start: Dask missing, an unknown metric, an --out that is not a sweep's."""


@dataclass
class SweepResult:
    """What a sweep did: one row per trial (see results.py), in trial order."""

    out: Path
    metric: str
    higher_is_better: bool
    grid: dict
    seeds: list
    rows: list[dict]
    interrupted: bool = False
    files: list[Path] = field(default_factory=list)


def check_metric(metric: str | None, specs: list) -> tuple[str, bool]:
    """(metric, higher is better); default val_acc with a validation split, else test_acc."""
    splits = ["train", "test"] + (["val"] if all(s.data.validation for s in specs) else [])
    known = [f"{s}_{m}" for s in splits for m in ("acc", "loss")]
    if metric is None:
        metric = "val_acc" if "val_acc" in known else "test_acc"
    if metric not in known:
        raise SweepError([Problem(f"unknown metric '{metric}'{did_you_mean(metric, known)}; "
                                  f"choose one of {', '.join(sorted(known))}", "", "--metric")])
    return metric, not metric.endswith("_loss")


# ------------------------------------------------------------------ the sweep directory


def claim(out: Path, record: dict) -> None:
    """Make `out` this sweep's directory (sweep.json); refuse a directory netspec did not make."""
    from netspec.fsio import atomic_write, make_dirs, os_problem

    marker = out / "sweep.json"
    try:
        foreign = out.is_dir() and not marker.exists() and any(out.iterdir())
    except OSError as e:
        raise OutputError([os_problem(e, out, "read the sweep directory")]) from None
    if out.exists() and not out.is_dir():
        raise SweepError([Problem("is a file; --out names the sweep's directory", "", str(out))])
    if foreign:
        raise SweepError([Problem("holds files netspec did not write (no sweep.json); choose "
                                  "another --out", "", str(out))])
    if marker.exists() and not is_sweep_record(marker):
        raise SweepError([Problem("holds a sweep.json that netspec did not write (not the "
                                  "record of a netspec sweep); choose another --out", "",
                                  str(out))])
    make_dirs(out)
    atomic_write(marker, json.dumps(record, indent=2) + "\n")


def is_sweep_record(path: Path) -> bool:
    """Whether `path` is the sweep.json of a netspec sweep, judged by its content."""
    from netspec.fsio import read_head

    try:
        record = json.loads(read_head(path, 1 << 20))
    except ValueError:
        return False
    return (isinstance(record, dict) and record.get("netspec_sweep") == SWEEP_FORMAT
            and isinstance(record.get("grid"), dict))


def finished(spec, run_dir: Path) -> list | None:
    """The history of a finished run of this very spec in run_dir, else None. A run of another
    spec there is an error: the sweep would mix trials (only train.epochs may change)."""
    from netspec import checkpoint
    from netspec.train.run import spec_changes_since

    last = run_dir / "checkpoints" / "last.npz"
    if not last.exists():
        return None
    try:
        ckpt = checkpoint.load(last)
    except NetspecError:
        return None  # the trial itself reports the damage
    changes = "; ".join(spec_changes_since(ckpt, spec))
    if changes:
        raise SweepError([Problem(f"holds a run of another spec ({changes}); rerun with the "
                                  "same spec, or choose another --out", "", str(run_dir))])
    done = ckpt.meta.get("progress", {}).get("epoch", 0) >= spec.train.epochs
    return ckpt.meta.get("history", []) if done else None


def check_data(trials_specs: list, data_dir) -> None:
    """Load each dataset the trials use once and check every trial's spec against it, as
    Trainer would (shapes, classes, labels, batches); one DataError for all of them, each
    problem once, naming the first trial that has it. A sweep runs this before any trial, so
    that missing data is one message, not one per trial."""
    from netspec.data import load_dataset, prepare
    from netspec.data.checks import check_batches, check_dataset, check_labels
    from netspec.errors import DataError

    groups: dict = {}
    for trial, spec in trials_specs:
        d = spec.data
        groups.setdefault((str(d.dataset), d.normalize, d.validation), []).append((trial, spec))
    problems, seen = [], set()
    for (dataset, normalize, validation), members in groups.items():
        ds = load_dataset(dataset, data_dir=data_dir)  # a DataError here concerns them all
        splits = prepare(ds, normalize, validation)
        for trial, spec in members:
            try:
                check_dataset(spec, ds)
                check_labels(spec, splits)
                check_batches(spec, spec.train.batch_size, len(splits["train"][1]))
            except DataError as e:
                for p in e.problems:
                    if str(p) not in seen:
                        seen.add(str(p))
                        problems.append(replace(p, message=f"{p.message} (trial "
                                                           f"{trial.index + 1}: {trial.label})"))
        del ds, splits  # one dataset in memory at a time
    if problems:
        raise DataError(problems)


# ------------------------------------------------------------------ running


def run(spec, grid: dict, seeds=None, client=None, *, out=None, overrides=(),
        metric: str | None = None, data_dir=None, workers: int | None = None,
        on_update=None, should_stop=None, retries: int = 1) -> SweepResult:
    """Train `spec` (a path, or a loaded NetSpec) once per grid point and seed.

    grid: {key path: [values]} (values as YAML text or Python values); seeds: list of ints
    (default: the spec's own seed); out: the sweep directory (default sweeps/<name>);
    overrides: `key.path=value` set in every trial. client: a
    dask.distributed Client; None starts a LocalCluster of `workers` processes (default one
    per core) for this call. on_update(row) is called (in this thread) whenever a trial's
    row changes. should_stop() is polled: once true, queued trials are cancelled and running
    ones save a checkpoint and stop; the result then has interrupted=True. A trial whose
    worker dies is run again elsewhere by the scheduler (up to Dask's allowed-failures), and
    resumes from its checkpoint; one that raised an unexpected error runs `retries` more times.
    """
    from netspec.sweep import results as sweep_report

    try:
        import distributed
    except ImportError:
        raise SweepError(f"netspec sweep needs Dask: {EXTRA}") from None
    text, file, base = _source(spec, overrides)
    seeds = [base.seed] if seeds is None else [int(s) for s in seeds]
    all_trials = trials(grid, seeds)
    specs = resolve(text, file, list(overrides), all_trials)
    metric, higher = check_metric(metric, specs)
    data_dir = Path(data_dir).expanduser().resolve() if data_dir else None
    out = Path(out or Path("sweeps") / base.name).expanduser().resolve()
    grid = {p: [canonical(as_text(v)) for v in vs] for p, vs in grid.items()}
    rows = [sweep_report.new_row(t, out / t.key) for t in all_trials]
    histories = [finished(s, out / t.key) for s, t in zip(specs, all_trials)]
    left = [(t, s) for t, s, h in zip(all_trials, specs, histories) if h is None]
    if left and client is None:  # the embedded cluster's workers see this machine's files
        check_data(left, data_dir)
    elif left:  # a cluster's workers may see other files: one task checks, where they run
        client.submit(check_data, left, data_dir, pure=False).result()
    claim(out, {"netspec_sweep": SWEEP_FORMAT, "spec": file, "overrides": list(overrides),
                "grid": grid, "seeds": seeds, "metric": metric})
    result = SweepResult(out, metric, higher, grid, seeds, rows)
    for row, history in zip(rows, histories):
        if history is not None:
            row.update(sweep_report.scores(history, metric, higher), status="done",
                       note="finished earlier")
    todo = [(t, row) for t, row in zip(all_trials, rows) if row["status"] != "done"]
    for row in rows:
        _notify(on_update, row)
    own = client is None and bool(todo)  # nothing to run: no cluster to start
    cluster = None
    try:
        if own:
            client, cluster = local_client(workers)
        result.interrupted = _drive(distributed, client, todo, text, file, list(overrides),
                                    out, metric, higher, data_dir, on_update, should_stop,
                                    retries)
    except BaseException:
        result.interrupted = True
        raise
    finally:
        result.files = sweep_report.write_summary(result)
        if own and client is not None:
            client.close()
            cluster.close()
    return result


def _source(spec, overrides) -> tuple[str, str, object]:
    """(YAML text, its name in messages, the spec with the fixed overrides) of a path or spec."""
    from netspec.spec.model import NetSpec, load, loads

    if isinstance(spec, NetSpec):
        text, file = spec.to_yaml(), f"{spec.name}.yaml (resolved)"
        return text, file, loads(text, file, overrides)
    base = load(spec, overrides)  # file errors (missing, not UTF-8) are reported here
    return Path(spec).read_bytes().decode("utf-8-sig"), str(spec), base


def local_client(workers: int | None = None):
    """(Client, LocalCluster): one single-threaded worker process per core on 127.0.0.1.

    The workers ignore SIGINT, so Ctrl-C in a terminal (sent to the whole process group)
    reaches only this process, which then stops the trials cleanly.
    """
    from distributed import Client, LocalCluster

    from netspec.plan.options import available_cores

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    # No dashboard, and the scheduler's HTTP routes on a free port (8787 may be taken).
    http = {"dashboard_address": "127.0.0.1:0"}
    try:  # spawned workers inherit the ignored SIGINT
        cluster = LocalCluster(n_workers=workers or available_cores(), threads_per_worker=1,
                               processes=True, host="127.0.0.1", silence_logs=logging.ERROR,
                               dashboard_address=None, scheduler_kwargs=http)
    except (OSError, RuntimeError, TimeoutError) as e:
        raise SweepError(f"cannot start the embedded Dask cluster ({e}); start one with "
                         "`dask scheduler` and `dask worker` and pass --scheduler") from None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    client = Client(cluster)
    from netspec.sweep.trial import IgnoreSigint

    client.register_plugin(IgnoreSigint())  # and so do workers restarted after a crash
    return client, cluster


def connect(address: str):
    """A Client of the Dask cluster whose scheduler is at `address` (tcp://host:8786)."""
    try:
        from distributed import Client
    except ImportError:
        raise SweepError(f"netspec sweep needs Dask: {EXTRA}") from None
    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as e:
        raise SweepError([Problem(f"cannot reach the Dask scheduler ({e}); start one with "
                                  "`dask scheduler`, or drop --scheduler for an embedded "
                                  "cluster", "", address)]) from None


def _notify(on_update, row: dict) -> None:
    if on_update is not None:
        on_update(dict(row))


def _drive(distributed, client, todo, text, file, fixed, out, metric, higher, data_dir,
           on_update, should_stop, retries) -> bool:
    """Submit the trials, follow their events, collect their rows; True if stopped early."""
    from netspec.sweep.trial import dask_trial

    if not todo:
        return False
    name = f"netspec-sweep-{uuid.uuid4().hex[:12]}"
    stop = distributed.Event(name + "-stop", client=client)
    events: queue.SimpleQueue = queue.SimpleQueue()
    client.subscribe_topic(name, lambda event: events.put(event[1]))
    by_key = {t.key: row for t, row in todo}
    futures = {}
    for trial, row in todo:
        task = {"text": text, "file": file, "options": fixed + trial.options,
                "run_dir": str(out / trial.key), "data_dir": str(data_dir) if data_dir else None,
                "metric": metric, "higher": higher, "topic": name, "stop": name + "-stop",
                "trial": trial.key}
        futures[trial.key] = client.submit(dask_trial, task, key=f"{name}-{trial.key}",
                                           pure=False, retries=retries)
    stopping = False
    try:
        while futures:
            while not events.empty():
                _apply_event(events.get(), by_key, on_update)
            for key, future in list(futures.items()):
                if future.status in ("finished", "error", "cancelled"):
                    del futures[key]
                    _finish(by_key[key], future, on_update)
            if not stopping and should_stop is not None and should_stop():
                stopping = True
                stop.set()
                for key, future in list(futures.items()):
                    if by_key[key]["status"] == "queued":
                        future.cancel()
                        del futures[key]
                        by_key[key].update(status="cancelled", note="cancelled before it ran")
                        _notify(on_update, by_key[key])
            time.sleep(0.1)
        while not events.empty():
            _apply_event(events.get(), by_key, on_update)
    except BaseException:  # a second Ctrl-C: stop what runs, leave at once
        with contextlib.suppress(Exception):  # the cluster may be gone already
            stop.set()
            client.cancel(list(futures.values()))
        for key in futures:  # what summary.csv says of them: no row stays `running`
            row = by_key[key]
            if row["status"] == "queued":
                row.update(status="cancelled", note="cancelled before it ran")
            elif row["status"] not in FINAL:
                row["status"] = "interrupted"
                _add_note(row, "stopped at once (a second Ctrl-C); it continues from its "
                               "last checkpoint when the sweep is run again")
        raise
    finally:
        client.unsubscribe_topic(name)
    return stopping


def _apply_event(msg: dict, by_key: dict, on_update) -> None:
    """A trial's progress report from its worker: started (again), or an epoch finished."""
    row = by_key.get(msg.get("trial"))
    if row is None or row["status"] in FINAL:
        return
    if msg["event"] == "running":
        if row["status"] == "running" and row.get("pid") != msg["pid"]:
            _add_note(row, f"restarted on {msg['worker']} after its worker was lost")
        row.update(status="running", worker=msg["worker"], pid=msg["pid"])
    elif msg["event"] == "resumed":
        _add_note(row, msg["note"])
        row["epochs"] = msg["epoch"]
    elif msg["event"] == "epoch":
        row.update(status="running", epochs=msg["epoch"], final=msg["final"], best=msg["best"])
    _notify(on_update, row)


def _finish(row: dict, future, on_update) -> None:
    """Fill a trial's row from its finished future (an exception becomes a failed row)."""
    if future.status == "finished":
        result = dict(future.result())
        note = result.pop("note", "")
        row.update(result)
        _add_note(row, note)
    elif future.status == "error":
        e = future.exception()
        name = type(e).__name__
        if name == "KilledWorker":
            message = ("its worker process died each time it ran (out of memory, or killed); "
                       "see the workers' logs")
        else:
            message = f"unexpected {name}: {e}"
        row.update(status="failed", message=message)
    else:
        row.update(status="cancelled")
    _notify(on_update, row)


def _add_note(row: dict, note: str) -> None:
    if note and note not in row.get("note", ""):
        row["note"] = f"{row['note']}; {note}" if row.get("note") else note
