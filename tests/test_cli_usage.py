"""Usage errors exit 2, and every command that takes a spec takes --set (issue 23)."""

import pytest
from conftest import SPECS, TINY
from typer.testing import CliRunner

from netspec.cli import app

MLP = str(SPECS[0].parent / "mlp.yaml")
SPEC_COMMANDS = ["validate", "draw", "gradcheck", "train", "eval", "export", "bench", "sweep"]


@pytest.mark.parametrize("command", SPEC_COMMANDS)
def test_every_command_that_takes_a_spec_takes_set(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--set" in result.output


def _argv(command, tmp_path):
    return {"validate": ["validate", MLP], "draw": ["draw", MLP, "-o", str(tmp_path / "m.svg")],
            "gradcheck": ["gradcheck", MLP, "--no-layers"],
            "train": ["train", MLP, "--out", str(tmp_path / "run"), "--no-progress"],
            "eval": ["eval", MLP, "-c", MLP],
            "export": ["export", MLP, "-o", str(tmp_path / "m.onnx")],
            "bench": ["bench", MLP, "--repeats", "1"],
            "sweep": ["sweep", MLP, "--out", str(tmp_path / "sw")]}[command]


@pytest.mark.parametrize("command", SPEC_COMMANDS)
@pytest.mark.parametrize("item", ["train.epochs", "train.epochs 3", ""])
def test_set_without_equals_is_a_usage_error(command, item, tmp_path):
    result = CliRunner().invoke(app, [*_argv(command, tmp_path), "--set", item])
    assert result.exit_code == 2, result.output
    assert "key.path=value" in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "sw").exists()


@pytest.mark.parametrize("item", ["train.optimizer.lr", "train.optimizer.lr 0.1", "=0.1",
                                  "train.epochs="])
def test_param_without_values_is_a_usage_error(item, tmp_path):
    result = CliRunner().invoke(app, ["sweep", MLP, "-p", item, "--out", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert "key.path=value1,value2" in " ".join(result.output.split())
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("values", ["0.1,1e-1", "1,1", "[3, 3],[3,3]", "adam,'adam'"])
def test_equal_sweep_values_are_refused(values, tmp_path):
    key = "train.optimizer.type" if "adam" in values else (
        "layers[0].kernel_size" if "[" in values else "train.optimizer.lr")
    result = CliRunner().invoke(app, ["sweep", MLP, "-p", f"{key}={values}",
                                      "--out", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert "twice" in result.output
    assert not (tmp_path / "s").exists()


def test_validate_takes_set(tmp_path):
    ok = CliRunner().invoke(app, ["validate", MLP, "--set", "layers[0].out_features=7"])
    assert ok.exit_code == 0, ok.output
    assert "(7,)" in ok.output
    bad = CliRunner().invoke(app, ["validate", MLP, "--set", "layers[0].out_features=0"])
    assert bad.exit_code == 1, bad.output
    assert "--set layers[0].out_features=0" in bad.output


def test_gradcheck_takes_set():
    result = CliRunner().invoke(app, ["gradcheck", MLP, "--no-layers", "--set",
                                      "gradcheck.max_entries=2"])
    assert result.exit_code == 0, result.output
    assert " 2 " in result.output


def test_tiny_fixture_path_is_importable():  # the fixture the other tests of this file use
    assert (TINY / "train-images-idx3-ubyte.gz").exists()
