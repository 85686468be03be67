"""Sweeps (issue 23): a double Ctrl-C leaves no `running` row and prints the command that
continues; the data is checked once, before any cluster starts; the live table shows the
worker's whole address and `best` in percent, as the final table does."""

import csv
import io
import os
import signal
import time

import pytest
from conftest import TINY, kill_group, long_sweep, tiny_conv_spec
from rich.console import Console
from typer.testing import CliRunner

distributed = pytest.importorskip(
    "distributed", reason="netspec sweep needs dask[distributed]: pip install 'netspec[sweep]'")

from netspec.cli import app
from netspec.cli import sweep as sweep_cli

SPEC = tiny_conv_spec("tiny", 3, fc=(16,), batch_size=64)
CLUSTER_TIMEOUT = 120


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


def test_a_double_ctrl_c_marks_running_trials_interrupted_and_prints_the_resume_command(
        spec_path, tmp_path):
    out = tmp_path / "sweep"
    proc = long_sweep(spec_path, out, CLUSTER_TIMEOUT)
    try:
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.05)  # trials poll for a stop twice a second: the sweep still waits
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=CLUSTER_TIMEOUT)
    finally:
        kill_group(proc, signal.SIGKILL)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    text = " ".join(stderr.split())
    assert "continue with: netspec sweep" in text and f"--out {out}" in text, text
    assert "--set train.epochs=500" in text and "--seeds 0,1" in text
    rows = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
    states = [r["status"] for r in rows]
    assert "running" not in states and "queued" not in states, states
    assert states == ["interrupted", "cancelled"], states  # one worker, two trials


def test_the_data_is_checked_once_before_the_cluster_starts(tmp_path, monkeypatch):
    from netspec.sweep import runner

    def no_cluster(*args, **kwargs):
        raise AssertionError("the cluster started although the data is missing")

    monkeypatch.setattr(runner, "local_client", no_cluster)
    path = tmp_path / "nodata.yaml"
    path.write_text(SPEC.replace(str(TINY), str(tmp_path / "nowhere")))
    result = CliRunner().invoke(app, ["sweep", str(path), "-p", "train.batch_size=32,64",
                                      "--seeds", "0,1", "--out", str(tmp_path / "s"),
                                      "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.count("unknown dataset") == 1, result.output  # said once
    assert not (tmp_path / "s").exists()


def test_the_data_check_happens_on_the_cluster_given(tmp_path, monkeypatch):
    """With --scheduler the data is where the workers are: checked there, once."""
    from netspec.sweep import runner

    calls = []
    real = runner.check_data

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "check_data", counted)
    client, cluster = runner.local_client(1)
    try:
        path = tmp_path / "nodata.yaml"
        path.write_text(SPEC.replace(str(TINY), str(tmp_path / "nowhere")))
        with pytest.raises(runner.NetspecError) as e:
            runner.run(path, {"train.batch_size": [32, 64]}, [0, 1], client,
                       out=tmp_path / "s")
        assert str(tmp_path / "nowhere") in str(e.value)
        assert not (tmp_path / "s").exists()
    finally:
        client.close()
        cluster.close(timeout=CLUSTER_TIMEOUT)


def test_the_live_table_shows_the_whole_worker_address_and_best_in_percent():
    table = sweep_cli._SweepTable(False, "on an embedded cluster", metric="test_acc")
    address = "tcp://127.0.0.1:40991"
    table.update({"trial": "0123456789", "overrides": {"train.optimizer.lr": 0.05}, "seed": 0,
                  "status": "running", "epochs": 3, "best": 0.9712, "worker": address})
    console = Console(width=80, file=io.StringIO(), force_terminal=False)
    console.print(table.render())
    shown = console.file.getvalue()
    assert address in shown, shown
    assert "97.12" in shown and "0.9712" not in shown
