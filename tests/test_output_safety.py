"""Output safety: netspec never overwrites a file it did not write, every unusable output path
is a clean error naming it, and a full disk or a denied write (injected) keeps the previous
checkpoint intact."""

import errno
import os
import shutil

import numpy as np
import pytest
from conftest import TINY, cli

import netspec
from netspec import checkpoint, fsio

SPEC = f"""
name: small
seed: 1
input: {{shape: [1, 28, 28]}}
layers:
  - {{type: flatten}}
  - {{type: linear, name: fc1, out_features: 16}}
  - {{type: relu}}
  - {{type: linear, name: fc2, out_features: 10}}
data: {{dataset: {TINY}}}
train: {{epochs: 1, batch_size: 128}}
"""


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A finished one-epoch run of SPEC, to copy."""
    tmp = tmp_path_factory.mktemp("base")
    (tmp / "small.yaml").write_text(SPEC)
    result = cli("train", tmp / "small.yaml", "--out", tmp / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    return tmp / "run"


def _snapshot(directory):
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


# ------------------------------------------------------------------ the run directory


def test_out_refuses_a_directory_holding_files_netspec_did_not_write(tmp_path, spec_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "spec.yaml").write_text("# my commented spec\n")
    (user / "curves.png").write_bytes(b"my plot")
    before = _snapshot(user)
    result = cli("train", spec_path, "--out", user, "--no-progress")
    assert result.exit_code == 1
    assert "not a netspec run" in result.output and str(user) in result.output
    assert _snapshot(user) == before


def test_out_dot_leaves_the_users_spec_untouched(tmp_path, spec_path, monkeypatch):
    monkeypatch.chdir(spec_path.parent)
    before = spec_path.read_text()
    result = cli("train", spec_path.name, "--out", ".", "--no-progress")
    assert result.exit_code == 1
    assert "not a netspec run" in result.output
    assert spec_path.read_text() == before
    assert sorted(os.listdir(".")) == ["small.yaml"]


def test_an_empty_directory_becomes_a_run_with_a_marker_and_resumes(tmp_path, spec_path):
    run = tmp_path / "empty"
    run.mkdir()
    assert cli("train", spec_path, "--out", run, "--no-progress").exit_code == 0
    assert fsio.is_run_dir(run) and (run / fsio.RUN_MARKER).is_file()
    again = cli("train", spec_path, "--set", "train.epochs=2", "--resume", run, "--no-progress")
    assert again.exit_code == 0, again.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path, spec_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "spec.yaml").write_text(SPEC)
    result = cli("train", "--resume", tmp_path / "other", "--no-progress")
    assert result.exit_code == 1
    assert "not a netspec run directory" in result.output


@pytest.mark.parametrize("where", ["file", "under-file", "proc", "sys", "too-long"])
def test_unusable_out_is_a_clean_error_naming_it(tmp_path, spec_path, where):
    (tmp_path / "afile").write_text("x")
    out = {"file": tmp_path / "afile", "under-file": tmp_path / "afile" / "run",
           "proc": "/proc/netspec-test-run", "sys": "/sys/netspec-test-run",
           "too-long": tmp_path / ("r" * 300)}[where]
    result = cli("train", spec_path, "--out", out, "--no-progress")
    assert result.exit_code == 1, result.output
    assert str(out)[:40] in result.output.replace("\n", "")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("where", ["dir", "under-file", "proc", "too-long"])
def test_schema_to_a_bad_path_is_a_clean_error(tmp_path, where):
    (tmp_path / "afile").write_text("x")
    out = {"dir": tmp_path, "under-file": tmp_path / "afile" / "s.json",
           "proc": "/proc/netspec-test.json", "too-long": tmp_path / ("s" * 300)}[where]
    result = cli("schema", "-o", out)
    assert result.exit_code == 1, result.output
    assert "cannot write" in result.output


def test_network_too_large_for_memory_is_a_spec_error(tmp_path, spec_path, monkeypatch):
    def no_memory(nbytes):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr("netspec.plan.compiler.Arena", no_memory)
    with pytest.raises(netspec.SpecError, match="out of memory.*fc1"):
        netspec.compile(netspec.load(spec_path))
    result = cli("bench", spec_path, "--repeats", "1")
    assert result.exit_code == 1 and "out of memory" in result.output


def test_corrupt_checkpoint_is_called_corrupt_without_pickle_advice(tmp_path, spec_path):
    bad = tmp_path / "last.npz"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    result = cli("eval", spec_path, "-c", bad)
    assert result.exit_code == 1
    assert "corrupt or not a netspec checkpoint" in result.output
    assert "pickle" not in result.output
    with pytest.raises(netspec.CheckpointError, match="corrupt"):
        checkpoint.load(bad)


# ------------------------------------------------------------------ fault injection


def _fail_writes_to(monkeypatch, name, code):
    """Make fsync fail with `code` for temp files of `name` (what a full disk or a revoked
    permission does to an atomic write), leaving every other write alone."""
    real = os.fsync

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}."):
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="the injection reads /proc/self/fd")
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES], ids=["ENOSPC", "EACCES"])
@pytest.mark.parametrize("name", ["last.npz", "metrics.jsonl", "curves.png"])
def test_failed_write_keeps_the_previous_checkpoint_and_names_the_file(
        tmp_path, spec_path, monkeypatch, name, code, one_epoch_run):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    last = run / "checkpoints" / "last.npz"
    before = _snapshot(run)
    _fail_writes_to(monkeypatch, name, code)
    result = cli("train", spec_path, "--set", "train.epochs=2", "--resume", run, "--no-progress")
    assert result.exit_code == 1, result.output
    assert name in result.output and os.strerror(code) in result.output
    after = _snapshot(run)
    assert not list(run.rglob("*.tmp"))  # no temp file left behind
    epoch = checkpoint.load(last).meta["progress"]["epoch"]  # intact and loadable
    if name == "last.npz":  # the failed write left the previous checkpoint as it was
        assert after[last.relative_to(run)] == before[last.relative_to(run)] and epoch == 1
    else:  # the file that failed (at resume, or after epoch 2) still holds its old content
        assert epoch == (2 if name == "curves.png" else 1)
        assert after[run.relative_to(run) / name] == before[run.relative_to(run) / name]


@pytest.mark.parametrize("target", ["/dev/null", "/dev/netspec-test.json", "/proc/self/comm"])
def test_schema_never_replaces_a_device_or_kernel_file(target):
    before = os.stat("/dev/null")
    result = cli("schema", "-o", target)
    assert result.exit_code == 1 and "cannot write" in result.output
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_rdev) == (before.st_mode, before.st_rdev)
    assert not os.path.exists("/dev/netspec-test.json")


def test_a_checkpoint_of_text_arrays_is_refused_by_name(tmp_path, spec_path):
    run = tmp_path / "run"
    assert cli("train", spec_path, "--out", run, "--no-progress").exit_code == 0
    good = checkpoint.load(run / "checkpoints" / "last.npz")
    text = {k: np.full(v.shape, "x") for k, v in good.state.items()}
    checkpoint.save(tmp_path / "text.npz", text, good.optimizer, good.meta)
    result = cli("eval", spec_path, "-c", tmp_path / "text.npz")
    assert result.exit_code == 1
    assert "not numbers: fc1.weight" in result.output


def test_an_os_error_the_library_missed_is_still_a_located_exit_1(spec_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/mnt/flaky/file")

    monkeypatch.setattr("netspec.plan.bench.time_layers", broken)
    result = cli("bench", spec_path, "--repeats", "1")
    assert result.exit_code == 1
    assert "/mnt/flaky/file: cannot read or write: Input/output error; input/output error " \
           "from the device" in result.output.replace("\n", "")


@pytest.mark.parametrize("where, says", [("/dev/zero", "is not a regular file"),
                                         ("missing.npz", "does not exist"),
                                         (".", "is a directory")])
def test_a_checkpoint_path_that_is_no_file_says_what_it_is(tmp_path, monkeypatch, where, says):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(netspec.CheckpointError, match=f"no checkpoint at .*: it {says}"):
        checkpoint.load(where)


def test_a_decompression_bomb_checkpoint_is_refused_before_decompressing(tmp_path, monkeypatch):
    """An .npz member that would expand 1000-fold (40 MB of zeros stored in ~40 kB) is refused
    from the archive's directory alone: np.load is never reached."""
    import zipfile

    bomb = tmp_path / "bomb.npz"
    with (zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive,
          archive.open("conv1.weight.npy", "w", force_zip64=True) as member):
        chunk = bytes(1 << 20)
        for _ in range(40):
            member.write(chunk)
    assert bomb.stat().st_size < 1 << 20
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load was reached"))
    with pytest.raises(netspec.CheckpointError, match="refused as a decompression bomb"):
        checkpoint.load(bomb)


def test_a_checkpoint_netspec_wrote_passes_the_expansion_check(tmp_path):
    state = {"fc.weight": np.zeros((300, 1000), np.float32)}  # 1.2 MB, stored as it is
    path = checkpoint.save(tmp_path / "ok.npz", state, {}, {"spec": {}})
    assert checkpoint.load(path).state["fc.weight"].shape == (300, 1000)
