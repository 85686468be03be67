"""`netspec export` from the outside: files written and refused, --check, exit codes, errors.

The accuracy test is the issue's done-criterion through the command line, on the tiny fixture:
a one-epoch `netspec train`, then `netspec eval` and `netspec export --check` on its checkpoint
must print the same test accuracy. Without the onnx extra the command names the pip command
and exits 1 (that test runs whether or not onnx is installed).
"""

from __future__ import annotations

import re
import sys

import pytest
from conftest import ROOT, TINY
from conftest import cli as netspec

from netspec.nn.layers import LAYERS

ON_TINY = ["--set", f"data.dataset={TINY}"]


@pytest.fixture
def onnx():
    pytest.importorskip("onnxruntime", reason="needs pip install 'netspec[onnx]'")
    return pytest.importorskip("onnx", reason="needs pip install 'netspec[onnx]'")


def test_without_the_onnx_extra_it_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    out = tmp_path / "lenet.onnx"
    result = netspec("export", ROOT / "specs" / "lenet.yaml", "-o", out)
    assert result.exit_code == 1
    assert "pip install 'netspec[onnx]'" in result.output
    assert not out.exists()


def test_exports_initial_weights_with_the_data_normalisation(onnx, tmp_path, tiny_splits):
    out = tmp_path / "lenet.onnx"
    result = netspec("export", ROOT / "specs" / "lenet.yaml", "-o", out, *ON_TINY)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert model.producer_name == "netspec"
    assert float(meta["netspec.mean"]) == tiny_splits.mean
    assert float(meta["netspec.std"]) == tiny_splits.std
    assert meta["netspec.weights"] == "initial weights (seed 0)"
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


def test_eval_and_export_check_print_the_same_accuracy(onnx, tmp_path):
    run = tmp_path / "run"
    trained = netspec("train", ROOT / "specs" / "lenet.yaml", *ON_TINY, "--set",
                      "train.epochs=1", "--out", run, "--workers", "1", "--no-progress")
    assert trained.exit_code == 0, trained.output
    ckpt = run / "checkpoints" / "best.npz"
    evaluated = netspec("eval", "--checkpoint", ckpt, "--workers", "1")
    assert evaluated.exit_code == 0, evaluated.output
    mine = re.search(r"accuracy (\d+\.\d\d)%", evaluated.output).group(1)

    out = tmp_path / "lenet.onnx"
    result = netspec("export", "--checkpoint", ckpt, "-o", out, "--check")  # spec from ckpt
    assert result.exit_code == 0, result.output
    m = re.search(r"netspec (\d+\.\d\d)%\s*│\s*onnxruntime (\d+\.\d\d)%", result.output)
    assert m, result.output
    assert m.group(1) == m.group(2) == mine
    assert "FAIL" not in result.output
    assert len(re.findall(r"│ shape ", result.output)) == 12  # every layer's shape checked
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["netspec.weights"] == str(ckpt)
    assert "netspec.mean" in meta  # from the checkpoint, which records the normalisation

    # another network with the same parameter shapes: refused, as by eval, unless --force
    other = [ROOT / "specs" / "lenet-max.yaml", "--checkpoint", ckpt, *ON_TINY]
    refused = netspec("export", *other, "-o", tmp_path / "max.onnx")
    assert refused.exit_code == 1 and "--force to export anyway" in refused.output
    assert netspec("export", *other, "-o", tmp_path / "max.onnx", "--force").exit_code == 0


def test_never_overwrites_a_file_netspec_did_not_write(onnx, tmp_path):
    spec = ROOT / "specs" / "mlp.yaml"
    precious = tmp_path / "model.onnx"
    precious.write_text("someone else's model")
    result = netspec("export", spec, "-o", precious, *ON_TINY)
    assert result.exit_code == 1
    assert "netspec did not write it" in result.output
    assert str(precious) in result.output
    assert precious.read_text() == "someone else's model"

    foreign = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []),
                                     producer_name="pytorch")
    onnx.save(foreign, str(precious))
    before = precious.read_bytes()
    assert netspec("export", spec, "-o", precious, *ON_TINY).exit_code == 1
    assert precious.read_bytes() == before


def test_replaces_its_own_file(onnx, tmp_path):
    """A second export to the same path replaces netspec's own file with the new network."""
    import numpy as np
    from onnx import numpy_helper

    import netspec as api

    out, spec = tmp_path / "mlp.onnx", ROOT / "specs" / "mlp.yaml"
    weights = {}
    for seed in (0, 1):
        result = netspec("export", spec, "-o", out, *ON_TINY, "--set", f"seed={seed}")
        assert result.exit_code == 0, result.output
        assert "wrote" in result.output
        model = onnx.load(str(out))
        assert model.producer_name == "netspec"
        weights[seed] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        plan = api.compile(api.load(spec, [f"seed={seed}"]))  # the initial weights of that seed
        assert np.array_equal(weights[seed]["fc1.weight"], plan.params["fc1.weight"])
    assert not np.array_equal(weights[0]["fc1.weight"], weights[1]["fc1.weight"])
    assert [p.name for p in tmp_path.iterdir()] == ["mlp.onnx"]  # no temp file left behind


@pytest.mark.parametrize("args", [["-o", "m.onnx"], ["specs/mlp.yaml"],
                                  ["specs/mlp.yaml", "-o", "m.onnx", "--bogus"]])
def test_usage_errors_exit_2(args):
    assert netspec("export", *args).exit_code == 2


def test_output_that_is_a_directory_is_an_error(onnx, tmp_path):
    from netspec.errors import OutputError
    from netspec.interop.onnx_export import check_output

    result = netspec("export", ROOT / "specs" / "mlp.yaml", "-o", tmp_path, *ON_TINY)
    assert result.exit_code == 2  # a usage error, as for draw -o
    assert "is a directory" in re.sub(r"[│\s]+", " ", result.output)  # rich may wrap it
    with pytest.raises(OutputError, match="it is a directory"):  # the library says so too
        check_output(tmp_path)


def test_a_layer_without_mapping_is_a_located_error(onnx, tmp_path, monkeypatch):
    monkeypatch.delattr(LAYERS["tanh"], "to_onnx")
    out = tmp_path / "zoo.onnx"
    result = netspec("export", ROOT / "specs" / "tiny-zoo.yaml", "-o", out, *ON_TINY)
    assert result.exit_code == 1
    line = next(ln for ln in result.output.splitlines() if ln.startswith("error:"))
    assert re.search(r"tiny-zoo\.yaml:\d+:\d+: layers\[4\] \(tanh\): cannot export to ONNX: "
                     r"layer type 'tanh' has no ONNX mapping", line), line
    assert not out.exists()


def test_a_failed_check_writes_nothing(onnx, tmp_path, monkeypatch):
    def onnx_default_pad_count(self, g, x):  # the bug --check exists for
        k, s, (pt, pb, pl, pr), _ = self.geometry(g.in_shape)
        return g.node("AveragePool", [x], kernel_shape=list(k), strides=list(s),
                      pads=[pt, pl, pb, pr])

    monkeypatch.setattr(LAYERS["avgpool2d"], "to_onnx", onnx_default_pad_count)
    out = tmp_path / "convnet.onnx"
    result = netspec("export", ROOT / "specs" / "convnet-bn.yaml", "-o", out, "--check",
                     *ON_TINY)
    assert result.exit_code == 1
    assert "FAIL" in result.output and "not written" in result.output
    assert not out.exists()
