"""`netspec bench`: a per-layer timing table for any spec (never asserts on times)."""

from conftest import SPECS
from typer.testing import CliRunner

import netspec
from netspec.cli import app
from netspec.plan.options import resolve_workers


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
    result = CliRunner().invoke(app, ["bench", path, "--eval-conv", "winograd"])
    assert result.exit_code == 2 and "--eval-conv" in result.output


def test_bench_shows_the_eval_conv_it_was_asked_for():
    path = next(p for p in SPECS if p.name == "resnet-mini.yaml")
    for choice in ("im2col", "auto"):
        result = CliRunner().invoke(app, ["bench", str(path), "--repeats", "1", "-b", "4",
                                          "--eval-conv", choice])
        assert result.exit_code == 0, result.output
        assert ("eval conv auto" in result.output) == (choice == "auto")


WINOGRAD_NET = """
name: wino-bench
input: {shape: [1, 28, 28]}
layers:
  - {type: conv2d, name: conv1, out_channels: 8, kernel_size: 3, padding: 1}
  - {type: relu}
  - {type: conv2d, name: conv2, out_channels: 8, kernel_size: 3, padding: 1}
  - {type: relu}
  - {type: flatten}
  - {type: linear, name: fc, out_features: 10}
train: {epochs: 1, batch_size: 8, optimizer: {type: sgd, lr: 0.1}}
"""


def test_bench_workers_times_one_workers_share_with_its_conv_paths(tmp_path, monkeypatch):
    """--workers 2 times half the batch with one BLAS thread, as a worker process runs it:
    conv2 (8 channels at 28x28) then takes the Winograd path; --workers 1 does not."""
    from netspec.kernels import winograd

    monkeypatch.setattr("netspec.plan.options.available_cores", lambda: 2)
    calls = []
    real = winograd.Winograd.forward
    monkeypatch.setattr(winograd.Winograd, "forward",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    path = tmp_path / "net.yaml"
    path.write_text(WINOGRAD_NET)
    result = CliRunner().invoke(app, ["bench", str(path), "--repeats", "2", "--workers", "2"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "one worker's share (4) of a batch of 8" in text and "1 BLAS thread" in text
    assert "the 2 workers run their shares at once" in text
    assert calls  # the path a worker takes
    calls.clear()
    result = CliRunner().invoke(app, ["bench", str(path), "--repeats", "2"])
    assert result.exit_code == 0, result.output
    assert "batch 8," in " ".join(result.output.split()) and not calls  # one process: GEMMs


def test_bench_workers_usage_errors_exit_2(monkeypatch):
    monkeypatch.setattr("netspec.plan.options.available_cores", lambda: 2)
    path = str(next(p for p in SPECS if p.name == "lenet.yaml"))
    for bad in ("0", "two", "3"):  # not a count, or more workers than cores
        result = CliRunner().invoke(app, ["bench", path, "--repeats", "1", "--workers", bad])
        assert result.exit_code == 2, (bad, result.output)
