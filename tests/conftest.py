"""Shared test fixtures: paths to the specs and the small committed MNIST subset, and `cli`,
which runs a netspec command in-process."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
TINY = Path(__file__).resolve().parent / "fixtures" / "mnist-tiny"  # 512 train / 256 test


def cli(*args):
    """`netspec ARGS...` through typer's CliRunner (arguments str()-ed). Anything but a clean
    exit is a traceback a user would see, so it fails the test here."""
    from typer.testing import CliRunner

    from netspec.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], prog_name="netspec")
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r} for {args}")
    return result


@pytest.fixture(scope="session")
def tiny_dataset():
    from netspec.data import load_dataset

    return load_dataset(str(TINY), download_missing=False)


@pytest.fixture(scope="session")
def tiny_splits(tiny_dataset):
    from netspec.data import prepare

    return prepare(tiny_dataset, "standardize", 0)


def tiny_conv_spec(name="tiny", seed=3, fc=(32,), dropout=None, epochs=2, batch_size=32,
                   optimizer="{type: sgd, lr: 0.05, momentum: 0.9}", schedule=None):
    """YAML text of the small LeNet-like net on TINY the test files train: conv1 (4 channels,
    5x5, stride 2), relu, 2x2 maxpool, flatten, a linear+relu per width in `fc`, an optional
    dropout, then a 10-way linear. `optimizer` and `schedule` are YAML flow mappings."""
    hidden = "".join(f"  - {{type: linear, name: fc{i}, out_features: {w}}}\n  - {{type: relu}}\n"
                     for i, w in enumerate(fc, 1))
    drop = f"  - {{type: dropout, p: {dropout}}}\n" if dropout is not None else ""
    sched = f"  schedule: {schedule}\n" if schedule is not None else ""
    return f"""
name: {name}
seed: {seed}
input: {{shape: [1, 28, 28]}}
layers:
  - {{type: conv2d, name: conv1, out_channels: 4, kernel_size: 5, stride: 2}}
  - {{type: relu}}
  - {{type: maxpool2d, kernel_size: 2}}
  - {{type: flatten}}
{hidden}{drop}  - {{type: linear, name: fc{len(fc) + 1}, out_features: 10}}
data: {{dataset: {TINY}}}
train:
  epochs: {epochs}
  batch_size: {batch_size}
  optimizer: {optimizer}
{sched}"""


def train_with_workers(spec, splits, workers, epochs=1, dtype="float64"):
    """(trainer, last epoch's stats) after `epochs` epochs on `workers` processes; the worker
    pool is closed again, also when training fails."""
    from netspec.train.trainer import Trainer

    trainer = Trainer(spec, splits, dtype=dtype, workers=workers)
    try:
        stats = [trainer.train_epoch() for _ in range(epochs)]
    finally:
        trainer.close()
    return trainer, stats[-1]


def finished_run(spec, splits, out):
    """A Run of `spec` in `out`, trained to its end."""
    from netspec.train.run import Run

    run = Run(spec, splits, out)
    run.start()
    assert run.fit()
    return run


def stopped_run(spec, splits, out, poll: int):
    """A Run of `spec` in `out`, stopped when its trainer asks whether to stop for the
    (poll + 1)-th time (it asks before every batch)."""
    from netspec.train.run import Run

    run = Run(spec, splits, out)
    run.start()
    polls = iter(range(1000))
    assert not run.fit(should_stop=lambda: next(polls) == poll)
    return run


def resumed_run(spec, splits, out):
    """The stopped Run in `out` resumed and trained to its end."""
    from netspec.train.run import Run

    run = Run(spec, splits, out)
    run.resume()
    assert run.fit()
    return run


class Hang(Exception):
    pass


@contextmanager
def deadline(seconds: int):
    """Raise Hang in the block if it takes longer than `seconds`, so that a hang fails a test
    (SIGALRM: Python code, and system calls it retries, are interrupted)."""
    def alarm(*_):
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def kill_group(proc, sig) -> None:
    """Send sig to the process group that proc leads (started with start_new_session), if any
    of it is left."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def long_sweep(spec_path, out, timeout: float):
    """`netspec sweep SPEC --seeds 0,1` of 500-epoch trials on one worker into out, in a
    process group of its own, returned once a trial has finished an epoch (for the Ctrl-C
    tests); the caller kills the group when done (kill_group)."""
    command = [sys.executable, "-m", "netspec", "sweep", str(spec_path), "--seeds", "0,1",
               "--set", "train.epochs=500", "--workers", "1", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        end = time.monotonic() + timeout
        while not any(out.glob("*/metrics.jsonl")):  # a trial has finished an epoch
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "no trial started"
            time.sleep(0.2)
    except BaseException:
        kill_group(proc, signal.SIGKILL)
        raise
    return proc


def running(pid: int) -> bool:
    """True while pid exists and is not a zombie (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def gone(pids, seconds: float = 10.0) -> bool:
    """Whether every process of pids has ended within `seconds`."""
    end = time.monotonic() + seconds
    while any(running(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.02)
    return not any(running(p) for p in pids)


def randomized(spec, seed: int = 0):
    """A float32 plan of `spec` whose biases and batchnorm state are random, not 0 and 1."""
    import numpy as np

    import netspec

    plan = netspec.compile(spec)
    rng = np.random.default_rng(seed)
    for name, v in {**plan.params, **plan.buffers}.items():
        key = name.rsplit(".", 1)[-1]
        if key in ("bias", "running_mean"):
            v[...] = rng.normal(0, 0.2, v.shape)
        elif key == "running_var" or (key == "weight" and v.ndim == 1):  # batchnorm scales
            v[...] = rng.uniform(0.5, 2.0, v.shape)
    return plan
