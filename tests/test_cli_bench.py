"""`netspec bench`: a per-layer timing table for any spec (never asserts on times)."""

from conftest import SPECS
from typer.testing import CliRunner

import netspec
from netspec.cli import app
from netspec.parallel import resolve_workers


def test_bench_lists_every_layer_and_the_step_rate():
    path = next(p for p in SPECS if p.name == "lenet.yaml")
    result = CliRunner().invoke(app, ["bench", str(path), "--repeats", "2", "-b", "8"])
    assert result.exit_code == 0, result.output
    for info in netspec.load(path).infos:
        assert info.name in result.output
    assert "images/s" in result.output and "optimizer step" in result.output
    workers, why = resolve_workers("auto", netspec.load(path).infos)
    assert (f"splits each batch across {why}" in " ".join(result.output.split())) == (
        workers > 1)


def test_bench_of_a_one_process_net_says_nothing_about_workers():
    path = next(p for p in SPECS if p.name == "mlp.yaml")
    result = CliRunner().invoke(app, ["bench", str(path), "--repeats", "2", "-b", "8"])
    assert result.exit_code == 0, result.output
    assert "worker" not in result.output


def test_bench_usage_errors_exit_2():
    path = str(SPECS[0])
    assert CliRunner().invoke(app, ["bench", path, "--dtype", "float16"]).exit_code == 2
    assert CliRunner().invoke(app, ["bench", path, "--repeats", "0"]).exit_code == 2
