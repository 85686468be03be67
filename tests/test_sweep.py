"""`netspec sweep` on real Dask: an embedded LocalCluster, and a `dask scheduler` with
`dask worker` processes started here on 127.0.0.1.

Every trial must equal an ordinary one-process training run of its spec, whatever happened to
it on the way (a rerun, Ctrl-C, its worker killed). The tiny MNIST fixture keeps an epoch at a
fraction of a second; nothing here asserts a duration.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, cli, kill_group, long_sweep, tiny_conv_spec
from typer.testing import CliRunner

distributed = pytest.importorskip(
    "distributed", reason="netspec sweep needs dask[distributed]: pip install 'netspec[sweep]'")

import netspec
from netspec import checkpoint
from netspec.cli import app
from netspec.sweep import runner as sweep
from netspec.train.run import Run

SPEC = tiny_conv_spec("tiny", 3, fc=(16,), batch_size=64)
LR = "train.optimizer.lr"
LONG = 30  # epochs of the trials whose worker is killed after their first epoch
CLUSTER_TIMEOUT = 120  # seconds for a cluster to come up or shut down on a loaded machine


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def ordinary(tmp_path_factory, tiny_splits):
    """The history of a plain one-process Run of the spec with these overrides (memoised)."""
    from threadpoolctl import threadpool_limits

    memo = {}

    def history(*options):
        if options not in memo:
            spec = netspec.loads(SPEC, "tiny.yaml", list(options))
            run = Run(spec, tiny_splits, tmp_path_factory.mktemp("ordinary"), workers=1)
            run.start()
            with threadpool_limits(1):
                assert run.fit()
            memo[options] = run.history
        return memo[options]

    return history


@pytest.fixture(scope="module")
def local():
    client, cluster = sweep.local_client(2)
    yield client
    client.close()
    cluster.close(timeout=CLUSTER_TIMEOUT)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """The address of a `dask scheduler` with one `dask worker` of two processes, each in
    its own session so that the whole tree is always stopped at the end."""
    tmp = tmp_path_factory.mktemp("dask")
    file = tmp / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    dask = [sys.executable, "-m", "dask"]
    procs = [subprocess.Popen(
        [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(file)], cwd=tmp,
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        while not file.exists() or not file.read_text().strip():
            assert procs[0].poll() is None, "dask scheduler exited"
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.2)
        address = json.loads(file.read_text())["address"]
        procs.append(subprocess.Popen(
            [*dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--host",
             "127.0.0.1", "--no-dashboard", "--memory-limit", "0"], cwd=tmp, env=env,
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with distributed.Client(address, timeout=CLUSTER_TIMEOUT) as client:
            client.wait_for_workers(2, timeout=CLUSTER_TIMEOUT)
        yield address
    finally:
        for p in reversed(procs):
            kill_group(p, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_group(p, signal.SIGKILL)
                p.wait(timeout=30)


def deadline(seconds=300):
    """A should_stop that ends a sweep cleanly (failing the test) if it hangs."""
    end = time.monotonic() + seconds
    return lambda: time.monotonic() > end


def rows_by(rows, *keys):
    return {tuple(r[k] if k != LR else r["overrides"][LR] for k in keys): r for r in rows}


def assert_ordinary(row, history):
    """The trial's run directory holds exactly the ordinary run's metrics."""
    assert row["status"] == "done", row
    lines = (Path(row["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["train_loss"] for r in records] == [h["train_loss"] for h in history]
    assert [r["test_acc"] for r in records] == [h["test_acc"] for h in history]
    assert row["final"] == history[-1]["test_acc"]
    assert row["best"] == max(h["test_acc"] for h in history)
    assert row["epochs"] == len(history)


# ------------------------------------------------------------------ no cluster needed


def test_params_split_at_top_level_commas_only():
    grid = sweep.parse_params(["train.optimizer.lr=0.01, 0.02,1e-1",
                               "layers[0].kernel_size=[3, 3],[5,5]", "data.dataset='a,b',c"])
    assert grid == {LR: ["0.01", "0.02", "1e-1"], "layers[0].kernel_size": ["[3, 3]", "[5,5]"],
                    "data.dataset": ["'a,b'", "c"]}
    for bad in (["lr"], ["lr="], ["lr=1,,2"], [f"{LR}=1", f"{LR}=2"], ["seed=1,2"]):
        with pytest.raises(netspec.SpecError, match="-p "):
            sweep.parse_params(bad)


def test_trials_are_the_grid_times_the_seeds_with_stable_keys():
    trials = sweep.trials({LR: ["0.01", 0.02], "train.batch_size": [32, 64]}, [0, 1])
    assert len(trials) == 8
    assert trials[0].options == [f"{LR}=0.01", "train.batch_size=32", "seed=0"]
    assert trials[1].options == [f"{LR}=0.01", "train.batch_size=32", "seed=1"]
    assert len({t.key for t in trials}) == 8
    same = sweep.trials({"train.batch_size": [32], LR: ["1e-2"]}, [0])[0]
    assert same.key == trials[0].key  # the same values, however written or ordered


def test_a_bad_value_fails_the_sweep_before_anything_runs(spec_path, tmp_path):
    out = tmp_path / "sweep"
    result = cli("sweep", spec_path, "-p", f"{LR}=0.01,-1", "-p", "layers[0].out_channels=4,0",
                 "--seeds", "0,1", "--out", out)
    assert result.exit_code == 1
    assert f"-p {LR}=-1: {LR}: should be greater than 0, got -1 (in trial 5 of 8" in result.output
    assert "-p layers[0].out_channels=0: layers[0] (conv2d 'conv1').out_channels: should be " \
           "greater than 0, got 0 (in trial 3 of 8" in result.output
    assert result.output.count("should be greater than 0") == 2  # each problem once
    assert not out.exists()


def test_unknown_metric_and_foreign_out_dir_are_errors(spec_path, tmp_path):
    result = cli("sweep", spec_path, "-p", f"{LR}=0.01", "--metric", "test_accuracy",
                 "--out", tmp_path / "a")
    assert result.exit_code == 1
    assert "--metric: unknown metric 'test_accuracy' (did you mean 'test_acc'" in result.output
    foreign = tmp_path / "b"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = cli("sweep", spec_path, "-p", f"{LR}=0.01", "--out", foreign)
    assert result.exit_code == 1
    assert "holds files netspec did not write" in result.output
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1


def test_usage_errors_exit_2(spec_path, tmp_path):
    for args in (["--seeds", "0,x"], ["--seeds", "1,1"], ["--workers", "999"],
                 ["--workers", "1", "--scheduler", "tcp://127.0.0.1:8786"]):
        result = cli("sweep", spec_path, "-p", f"{LR}=0.01", "--out", tmp_path / "s", *args)
        assert result.exit_code == 2, result.output
        assert args[0] in result.output
    assert not (tmp_path / "s").exists()


def test_a_sweep_of_more_than_ten_thousand_trials_is_refused_at_once(spec_path, tmp_path):
    values = ",".join(str(k / 1e5) for k in range(1, 101))  # 100 x 100 values x 2 seeds
    result = cli("sweep", spec_path, "-p", f"{LR}={values}", "-p", f"train.epochs={values}",
                 "--seeds", "0,1", "--out", tmp_path / "s")
    assert result.exit_code == 1, result.output
    assert "20,000 trials" in " ".join(result.output.split())
    assert not (tmp_path / "s").exists()


def test_without_dask_sweep_names_the_extra(spec_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    result = cli("sweep", spec_path, "-p", f"{LR}=0.01")
    assert result.exit_code == 1
    assert "pip install 'netspec[sweep]'" in result.output


# ------------------------------------------------------------------ embedded LocalCluster


def test_sweep_on_a_local_cluster_then_rerun_skips_finished(spec_path, tmp_path, local,
                                                            ordinary):
    out = tmp_path / "sweep"
    result = sweep.run(spec_path, {LR: [0.02, 0.05]}, [0, 1], local, out=out,
                       should_stop=deadline())
    assert not result.interrupted and len(result.rows) == 4
    for (lr, seed), row in rows_by(result.rows, LR, "seed").items():
        assert_ordinary(row, ordinary(f"{LR}={lr}", f"seed={seed}"))
        run_dir = out / row["trial"]
        assert row["run_dir"] == str(run_dir)
        resolved = netspec.load(run_dir / "spec.yaml")
        assert (resolved.train.optimizer.lr, resolved.seed) == (lr, seed)
        for name in ("checkpoints/best.npz", "curves.png", "report.html"):  # as `netspec train`
            assert (run_dir / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "test_acc" and len(summary["trials"]) == 4
    assert [g["overrides"][LR] for g in summary["groups"]] == sorted(
        [0.02, 0.05], key=lambda lr: -np.mean(
            [r["final"] for r in result.rows if r["overrides"][LR] == lr]))
    csv = (out / "summary.csv").read_text().splitlines()
    assert csv[0].startswith(f"trial,{LR},seed,status,final_test_acc,best_test_acc,epochs")
    assert len(csv) == 5 and all(",done," in line for line in csv[1:])
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    stamps = {r["trial"]: os.stat(out / r["trial"] / "checkpoints" / "last.npz").st_mtime_ns
              for r in result.rows}
    again = sweep.run(spec_path, {LR: ["2e-2", "5e-2"]}, [0, 1], local, out=out)
    assert [r["trial"] for r in again.rows] == [r["trial"] for r in result.rows]
    for old, new in zip(result.rows, again.rows):
        assert new["status"] == "done" and new["note"] == "finished earlier"
        assert (new["final"], new["best"], new["epochs"]) == (old["final"], old["best"], 2)
    assert stamps == {r["trial"]: os.stat(out / r["trial"] / "checkpoints" / "last.npz")
                      .st_mtime_ns for r in again.rows}
    with pytest.raises(sweep.SweepError, match=r"holds a run of another spec \(train.optimizer"
                                               r".momentum"):
        sweep.run(spec_path, {LR: [0.02]}, [0], local, out=out,
                  overrides=["train.optimizer.momentum=0.5"])


def test_stop_cancels_queued_trials_checkpoints_running_ones_and_rerun_finishes(
        spec_path, tmp_path, local, ordinary):
    out = tmp_path / "sweep"
    stop = {"now": False}

    def on_update(row):
        stop["now"] = stop["now"] or row["epochs"] >= 1

    late = deadline()
    first = sweep.run(spec_path, {}, [0, 1, 2], local, out=out, overrides=["train.epochs=500"],
                      on_update=on_update, should_stop=lambda: stop["now"] or late())
    assert first.interrupted
    states = [r["status"] for r in first.rows]
    assert "interrupted" in states and "cancelled" in states, states  # 2 workers, 3 trials
    assert set(states) <= {"interrupted", "cancelled"}, states
    for row in first.rows:
        if row["status"] == "interrupted":  # stopped between two steps, with a checkpoint
            ckpt = checkpoint.load(out / row["trial"] / "checkpoints" / "last.npz")
            assert ckpt.meta["progress"]["epoch"] == row["epochs"]
    assert json.loads((out / "summary.json").read_text())["interrupted"]

    # Rerun, asking for fewer epochs than the 500 (only train.epochs may change on resume).
    epochs = [f"train.epochs={max(r['epochs'] for r in first.rows) + 2}"]
    second = sweep.run(spec_path, {}, [0, 1, 2], local, out=out, overrides=epochs,
                       should_stop=deadline())
    assert not second.interrupted
    for row in second.rows:
        assert_ordinary(row, ordinary(*epochs, f"seed={row['seed']}"))
    resumed = [r for r, s in zip(second.rows, states) if s == "interrupted"]
    assert resumed and all(r["note"].startswith("resumed ") for r in resumed)


# ------------------------------------------------------------------ dask scheduler + workers


def test_same_sweep_on_a_dask_scheduler_with_a_diverging_trial(spec_path, tmp_path, scheduler,
                                                               ordinary):
    out = tmp_path / "sweep"
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "-p", f"{LR}=0.05,1e8", "--seeds",
                                      "0,1", "--out", str(out), "--no-progress"],
                                env={"DASK_SCHEDULER_ADDRESS": scheduler})
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 1, result.output  # some trials failed
    summary = json.loads((out / "summary.json").read_text())
    rows = rows_by(summary["trials"], LR, "seed")
    assert len(rows) == 4
    for seed in (0, 1):
        failed = rows[(1e8, seed)]
        assert failed["status"] == "failed"
        assert re.search("loss became (nan|inf)", failed["message"])
        assert "lower learning rate" in failed["message"]
        assert f"failed trial {failed['trial']} ({LR}=1e+08 seed {seed}): loss became " \
            in result.output
        for lr in (0.05,):
            assert_ordinary(rows[(lr, seed)], ordinary(f"{LR}={lr}", f"seed={seed}"))
            assert rows[(lr, seed)]["worker"].startswith("tcp://127.0.0.1:")
    table = result.output[result.output.index("mean ± std"):]
    assert table.index("│ 0.05 ") < table.index("│ 1e+08 ")  # failures last
    assert "0/2 (2 failed)" in table


def test_a_killed_worker_process_s_trial_completes_elsewhere(spec_path, tmp_path, scheduler,
                                                             ordinary):
    killed = {}

    def on_update(row):
        if not killed and row["status"] == "running" and row["epochs"] >= 1:
            killed.update(pid=row["pid"], trial=row["trial"])
            os.kill(row["pid"], signal.SIGKILL)

    with distributed.Client(scheduler, timeout=CLUSTER_TIMEOUT) as client:
        result = sweep.run(spec_path, {}, [0, 1], client, out=tmp_path / "sweep",
                           overrides=[f"train.epochs={LONG}"], on_update=on_update,
                           should_stop=deadline())
    assert killed and not result.interrupted
    for row in result.rows:
        assert_ordinary(row, ordinary(f"train.epochs={LONG}", f"seed={row['seed']}"))
    row = next(r for r in result.rows if r["trial"] == killed["trial"])
    assert row["pid"] != killed["pid"]
    assert "after its worker was lost" in row["note"] and "; resumed " in row["note"]


def test_ctrl_c_in_a_terminal_exits_130_and_running_trials_keep_a_checkpoint(spec_path, tmp_path):
    """Ctrl-C in a terminal signals the whole process group, the embedded cluster's worker
    processes too: they must ignore it and let the sweep stop them cleanly."""
    out = tmp_path / "sweep"
    proc = long_sweep(spec_path, out, CLUSTER_TIMEOUT)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        stdout, stderr = proc.communicate(timeout=CLUSTER_TIMEOUT)
    finally:
        kill_group(proc, signal.SIGKILL)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted" in stderr and "rerun the same command" in stderr
    assert "Traceback" not in stdout + stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"]
    states = [r["status"] for r in summary["trials"]]
    assert states == ["interrupted", "cancelled"], states  # one worker, two trials
    for row in summary["trials"]:
        if row["status"] == "interrupted":
            ckpt = checkpoint.load(out / row["trial"] / "checkpoints" / "last.npz")
            assert ckpt.meta["progress"]["epoch"] == row["epochs"] < 500
