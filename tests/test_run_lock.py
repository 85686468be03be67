"""No run lost to a neighbour (issue 23): default run directories cannot collide, a second
writer to a run directory is refused (exit 1) while the first lives, a lock left by a killed
run does not block its resume, and a refused --out is left exactly as it was."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, cli

from netspec import fsio

SPEC = f"""
name: same
seed: 0
input: {{shape: [784]}}
layers:
  - {{type: linear, name: fc1, out_features: 16}}
  - {{type: relu}}
  - {{type: linear, name: fc2, out_features: 10}}
data: {{dataset: {TINY}}}
train: {{epochs: 1, batch_size: 128}}
"""


def _snapshot(directory: Path) -> dict:
    return {p.relative_to(directory): (p.read_bytes() if p.is_file() else None)
            for p in directory.rglob("*")}


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "same.yaml"
    path.write_text(SPEC)
    return path


def test_default_run_directories_of_the_same_second_do_not_collide(tmp_path, spec_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261201-120000")
    first = cli("train", spec_path, "--no-progress", "--workers", "1")
    second = cli("train", spec_path, "--no-progress", "--workers", "1", "--set", "seed=5")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.startswith("same-20261201-120000") for r in runs), runs
    seeds = {(tmp_path / "runs" / r / "spec.yaml").read_text().split("seed: ")[1][0]
             for r in runs}
    assert seeds == {"0", "5"}  # both runs kept


def test_a_default_run_directory_is_removed_again_when_the_run_cannot_start(tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "nodata.yaml"
    path.write_text(SPEC.replace(str(TINY), str(tmp_path / "nowhere")))
    result = cli("train", path, "--no-progress", "--workers", "1")
    assert result.exit_code == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _netspec(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "netspec", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_writer_is_refused_while_the_first_lives_and_a_killed_run_resumes(
        tmp_path, spec_path):
    run = tmp_path / "shared"
    first = _netspec("train", spec_path, "--out", run, "--no-progress", "--workers", "1",
                     "--set", "train.epochs=100000")
    try:
        _wait_for(run / "metrics.jsonl", first)  # written after checkpoints/last.npz
        before = _snapshot(run)
        second = cli("train", spec_path, "--out", run, "--no-progress", "--workers", "1",
                     "--set", "seed=5")
        assert second.exit_code == 1, second.output
        text = " ".join(second.output.split())
        assert "in use" in text and f"pid {first.pid}" in text, text
        resumed = cli("train", "--resume", run, "--no-progress", "--workers", "1")
        assert resumed.exit_code == 1, resumed.output
        assert f"pid {first.pid}" in " ".join(resumed.output.split())
        def names(snapshot):  # the first run goes on writing (atomically, through temp files)
            return {p for p in snapshot if not p.name.endswith(".tmp")}

        assert names(_snapshot(run)) == names(before)  # the refused ones wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (run / fsio.LOCK).exists()  # left behind by the killed run
    resumed = cli("train", "--resume", run, "--no-progress", "--workers", "1", "--set",
                  f"train.epochs={_done(run) + 1}")
    assert resumed.exit_code == 0, resumed.output


def _done(run: Path) -> int:
    from netspec import checkpoint

    return checkpoint.load(run / "checkpoints" / "last.npz").meta["progress"]["epoch"]


def test_the_lock_is_refused_within_one_process_too(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    with fsio.run_lock(run), pytest.raises(fsio.OutputError, match="in use"):
        fsio.run_lock(run)
    with fsio.run_lock(run):  # released
        pass


def test_a_refused_out_with_a_foreign_metrics_file_is_left_as_it_was(tmp_path, spec_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "metrics.jsonl").write_text('{"loss": 1}\n')
    before = _snapshot(user)
    result = cli("train", spec_path, "--out", user, "--no-progress", "--workers", "1")
    assert result.exit_code == 1, result.output
    assert _snapshot(user) == before  # no .netspec-run, no lock, nothing


def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path, spec_path):
    run = tmp_path / "r"
    assert cli("train", spec_path, "--out", run, "--no-progress", "--workers", "1",
               "--set", "train.epochs=2").exit_code == 0
    before = _snapshot(run)
    result = cli("train", "--resume", run, "--no-progress", "--workers", "1",
                 "--set", "train.epochs=1")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "2 epochs" in text and "train.epochs=2" in text, text
    assert _snapshot(run) == before
    same = cli("train", "--resume", run, "--no-progress", "--workers", "1")
    assert same.exit_code == 0, same.output  # as many as done: nothing to do, not an error
