"""Files written and refused (issue 23): output modes follow the umask, `schema -o` and
`sweep --out` check what they would replace by its content, `report` writes no machine.json
into a folder netspec did not make and survives any metrics.jsonl, NaN weights are refused by
name, a trailing slash means a directory, and an untrained export needs no data."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TINY, cli

import netspec
from netspec import checkpoint, fsio

MLP = ROOT / "specs" / "mlp.yaml"
SMALL = f"""
name: small
seed: 1
input: {{shape: [784]}}
layers:
  - {{type: linear, name: fc1, out_features: 8}}
  - {{type: relu}}
  - {{type: linear, name: fc2, out_features: 10}}
data: {{dataset: {TINY}}}
train: {{epochs: 1, batch_size: 128}}
"""


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    def set_to(mask):
        os.umask(mask)

    old = os.umask(0o022)
    yield set_to
    os.umask(old)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    (tmp / "small.yaml").write_text(SMALL)
    old = os.umask(0o022)
    try:
        result = cli("train", tmp / "small.yaml", "--out", tmp / "run", "--no-progress",
                     "--workers", "1")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    return tmp / "run"


# ------------------------------------------------------------------ modes


def test_atomic_writes_follow_the_umask(tmp_path, umask):
    new = fsio.atomic_write(tmp_path / "a.txt", "x")
    assert _mode(new) == 0o644
    umask(0o077)
    assert _mode(fsio.atomic_write(tmp_path / "b.txt", "x")) == 0o600
    umask(0o002)
    assert _mode(fsio.atomic_write(tmp_path / "c.txt", "x")) == 0o664


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    path = tmp_path / "keep.txt"
    fsio.atomic_write(path, "one")
    os.chmod(path, 0o640)
    fsio.atomic_write(path, "two")
    assert _mode(path) == 0o640 and path.read_text() == "two"


def test_run_files_and_reports_are_0644_under_umask_022(small_run):
    for name in ("spec.yaml", "metrics.jsonl", "checkpoints/last.npz", "checkpoints/best.npz",
                 "curves.png", "report.html"):
        assert _mode(small_run / name) == 0o644, name


def test_schema_file_is_0644_under_umask_022(tmp_path, umask):
    assert cli("schema", "-o", tmp_path / "s.json").exit_code == 0
    assert _mode(tmp_path / "s.json") == 0o644


# ------------------------------------------------------------------ schema -o


@pytest.mark.parametrize("text", ["input: {shape: [784]}\n", '{"my": "json"}\n',
                                  '{"title": "netspec network spec"}\n', ""])
def test_schema_refuses_to_replace_a_file_netspec_did_not_write(tmp_path, text):
    path = tmp_path / "mine.json"
    path.write_text(text)
    result = cli("schema", "-o", path)
    assert result.exit_code == 1, result.output
    assert "netspec did not write" in " ".join(result.output.split())
    assert path.read_text() == text


def test_schema_replaces_its_own_file(tmp_path):
    path = tmp_path / "netspec.schema.json"
    path.write_text((ROOT / "netspec.schema.json").read_text().replace("netspec", "netspec", 1))
    first = cli("schema", "-o", path)
    assert first.exit_code == 0, first.output
    assert cli("schema", "-o", path).exit_code == 0


# ------------------------------------------------------------------ sweep --out


@pytest.mark.parametrize("content", ['{"results": [1, 2]}\n', "not json\n", "[]\n",
                                     '{"netspec_sweep": "yes"}\n'])
def test_sweep_refuses_a_folder_whose_sweep_json_is_not_a_sweeps(tmp_path, content):
    pytest.importorskip("distributed")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "sweep.json").write_text(content)
    (folder / "summary.csv").write_text("my,data\n")
    spec = tmp_path / "small.yaml"
    spec.write_text(SMALL)
    result = cli("sweep", spec, "-p", "train.batch_size=64,128", "--out", folder,
                 "--no-progress", "--workers", "1")
    assert result.exit_code == 1, result.output
    assert "sweep.json" in result.output
    assert (folder / "sweep.json").read_text() == content
    assert (folder / "summary.csv").read_text() == "my,data\n"
    assert sorted(os.listdir(folder)) == ["summary.csv", "sweep.json"]


# ------------------------------------------------------------------ report


def _users_folder(tmp_path, metrics: str) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "spec.yaml").write_text(SMALL)
    (folder / "metrics.jsonl").write_text(metrics)
    return folder


def test_report_writes_no_machine_json_into_a_users_folder(tmp_path):
    folder = _users_folder(tmp_path, '{"epoch": 1, "loss": 0.5}\n')
    result = cli("report", folder, "--no-eval")
    assert result.exit_code in (0, 1), result.output
    assert not (folder / "machine.json").exists()


ODD = [('{"epoch": 1, "lr": Infinity, "train_loss": Infinity, "train_acc": 0.5, '
        '"test_loss": NaN, "test_acc": Infinity, "train_seconds": 1, "images_per_second": 1}'),
       "null", "[1, 2, 3]", '"text"', '{"epoch": 2, "loss": 0.3}',
       '{"epoch": "x", "train_acc": null, "lr": [1], "test_acc": {"a": 1}}',
       ('{"epoch": 3, "lr": -1e308, "train_loss": 1e308, "train_acc": 2, "test_acc": -5, '
        '"train_seconds": -1, "eval_seconds": "x", "images_per_second": null, "workers": "x"}'),
       '{"epoch": 1e400, "val_acc": 0.5}']


@pytest.mark.parametrize("line", ODD)
def test_report_survives_odd_metrics_lines(tmp_path, line):
    folder = _users_folder(tmp_path, line + "\n")
    (folder / fsio.RUN_MARKER).write_text("{}\n")
    result = cli("report", folder, "--no-eval")
    assert result.exit_code == 0, result.output
    assert (folder / "report.html").is_file()


def test_report_of_a_foreign_metrics_file_has_no_key_error(tmp_path):
    folder = _users_folder(tmp_path, '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n')
    result = cli("report", folder, "--no-eval")
    assert "KeyError" not in result.output
    assert result.exit_code in (0, 1), result.output


# ------------------------------------------------------------------ NaN weights


@pytest.fixture
def nan_checkpoint(small_run, tmp_path):
    ckpt = checkpoint.load(small_run / "checkpoints" / "last.npz")
    state = dict(ckpt.state)
    state["fc2.bias"] = state["fc2.bias"].copy()
    state["fc2.bias"][3] = np.nan
    path = tmp_path / "nan.npz"
    checkpoint.save(path, state, ckpt.optimizer, ckpt.meta)
    return path


def test_eval_refuses_nan_weights_naming_the_parameter(nan_checkpoint):
    result = cli("eval", "-c", nan_checkpoint, "--workers", "1")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "fc2.bias" in text and "NaN" in text and "test loss" not in text


def test_export_refuses_nan_weights_naming_the_parameter(nan_checkpoint, tmp_path):
    pytest.importorskip("onnx")
    result = cli("export", "-c", nan_checkpoint, "-o", tmp_path / "m.onnx", "--check")
    assert result.exit_code == 1, result.output
    assert "fc2.bias" in " ".join(result.output.split())
    assert not (tmp_path / "m.onnx").exists()


def test_infinite_weights_are_refused_too(small_run, tmp_path):
    ckpt = checkpoint.load(small_run / "checkpoints" / "last.npz")
    state = {k: v.copy() for k, v in ckpt.state.items()}
    state["fc1.weight"][0, 0] = np.inf
    path = checkpoint.save(tmp_path / "inf.npz", state, ckpt.optimizer, ckpt.meta)
    with pytest.raises(netspec.NetspecError, match="fc1.weight"):
        checkpoint.load(path)


# ------------------------------------------------------------------ trailing slash


@pytest.mark.parametrize("command", ["export", "draw", "schema"])
def test_a_trailing_slash_means_a_directory(command, tmp_path):
    target = str(tmp_path / "missing" / "dir") + os.sep
    argv = {"export": ["export", MLP, "-o", target], "draw": ["draw", MLP, "-o", target],
            "schema": ["schema", "-o", target]}[command]
    result = cli(*argv)
    assert result.exit_code == 2, result.output
    assert "directory" in result.output
    assert not (tmp_path / "missing" / "dir").exists()


# ------------------------------------------------------------------ export without data


def test_the_readme_export_of_initial_weights_needs_no_data(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    monkeypatch.delenv("NETSPEC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no cached MNIST either
    import urllib.request

    def offline(*args, **kwargs):
        raise AssertionError("an export of initial weights downloads nothing")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)
    result = cli("export", ROOT / "specs" / "lenet.yaml", "-o", "lenet-init.onnx")
    assert result.exit_code == 0, result.output
    meta = {p.key: p.value for p in onnx.load("lenet-init.onnx").metadata_props}
    assert meta["netspec.normalize"] == "standardize"
    assert "netspec.mean" not in meta and "netspec.std" not in meta
    assert "initial weights" in meta["netspec.preprocess"]
    assert "not recorded" in " ".join(result.output.split())


def test_export_refuses_a_json_file_in_the_way(tmp_path):
    """onnx.load reads `x.json` as ONNX's JSON text format and raised a ParseError."""
    pytest.importorskip("onnx")
    path = tmp_path / "s.json"
    assert cli("schema", "-o", path).exit_code == 0
    before = path.read_text()
    result = cli("export", MLP, "-o", path)
    assert result.exit_code == 1, result.output
    assert "netspec did not write it" in result.output and path.read_text() == before
