"""`netspec import` and `netspec train --init` from the outside: files written and refused,
exit codes, and the weights going round: import -> eval / export --checkpoint -> train --init.
"""

from __future__ import annotations

import re

import pytest
from conftest import ROOT, TINY
from conftest import cli as netspec

onnx = pytest.importorskip("onnx", reason="netspec import needs pip install 'netspec[onnx]'")



@pytest.fixture
def lenet_onnx(tmp_path):
    """LeNet exported by netspec (its initial weights), as a model to import."""
    path = tmp_path / "lenet.onnx"
    assert netspec("export", ROOT / "specs" / "lenet.yaml", "-o", path, "--set",
                   f"data.dataset={TINY}").exit_code == 0
    return path


def test_import_writes_a_spec_and_weights_that_eval_and_export_take(lenet_onnx, tmp_path):
    spec, weights = tmp_path / "lenet.yaml", tmp_path / "lenet.npz"
    result = netspec("import", lenet_onnx, "-o", spec, "--weights", weights)
    assert result.exit_code == 0, result.output
    assert re.search(r"wrote .*lenet\.yaml: 12 layers from 12 ONNX nodes \(opset 17\), 61,706 "
                     r"parameters", " ".join(result.output.split()))
    assert spec.read_text().startswith("# Imported from lenet.onnx by netspec import")
    assert netspec("validate", spec).exit_code == 0
    evaluated = netspec("eval", spec, "--checkpoint", weights, "--set",
                        f"data.dataset={TINY}", "--workers", "1")
    assert evaluated.exit_code == 0, evaluated.output
    assert "accuracy" in evaluated.output
    again = tmp_path / "again.onnx"
    exported = netspec("export", "--checkpoint", weights, "-o", again)
    assert exported.exit_code == 0, exported.output
    first = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(lenet_onnx))
             .graph.initializer}
    second = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(again))
              .graph.initializer}
    assert first.keys() == second.keys()
    assert all((first[k] == second[k]).all() for k in first)  # the same weights, round trip
    # run again: netspec's own files are replaced
    assert netspec("import", lenet_onnx, "-o", spec, "--weights", weights).exit_code == 0


def test_import_never_overwrites_files_it_did_not_write(lenet_onnx, tmp_path):
    precious = tmp_path / "mine.yaml"
    precious.write_text("my spec\n")
    result = netspec("import", lenet_onnx, "-o", precious)
    assert result.exit_code == 1 and "netspec import did not write it" in result.output
    assert precious.read_text() == "my spec\n"
    weights = tmp_path / "w.npz"
    weights.write_bytes(b"not a checkpoint")
    result = netspec("import", lenet_onnx, "-o", tmp_path / "new.yaml", "--weights", weights)
    assert result.exit_code == 1 and not (tmp_path / "new.yaml").exists()


def test_an_unsupported_model_writes_nothing(tmp_path):
    h = onnx.helper
    graph = h.make_graph([h.make_node("Relu", ["x"], ["r"], name="act"),
                          h.make_node("Resize", ["r", "", "s"], ["y"], name="upsample")], "g",
                         [h.make_tensor_value_info("x", 1, [1, 3, 4, 4])],
                         [h.make_tensor_value_info("y", 1, None)],
                         [onnx.numpy_helper.from_array(
                             __import__("numpy").array([1, 1, 2, 2], "float32"), "s")])
    model = tmp_path / "up.onnx"
    model.write_bytes(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
                      .SerializeToString())
    out, weights = tmp_path / "up.yaml", tmp_path / "up.npz"
    result = netspec("import", model, "-o", out, "--weights", weights)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "node 1 'upsample' (Resize): netspec has no layer for Resize" in text
    assert "nothing was written" in text
    assert not out.exists() and not weights.exists()
    bad_shape = netspec("import", model, "-o", out, "--input-shape", "3,abc")
    assert bad_shape.exit_code == 2


def test_train_init_loads_by_name_and_reports_what_starts_fresh(lenet_onnx, tmp_path):
    weights = tmp_path / "lenet.npz"
    assert netspec("import", lenet_onnx, "-o", tmp_path / "lenet.yaml", "--weights",
                   weights).exit_code == 0
    common = ["--set", f"data.dataset={TINY}", "--set", "train.epochs=1", "--workers", "1",
              "--no-progress"]
    run = tmp_path / "run"
    result = netspec("train", ROOT / "specs" / "lenet.yaml", "--init", weights, "--out", run,
                     *common)
    assert result.exit_code == 0, result.output
    assert "init: loaded 10 tensors from" in result.output
    assert "initialised fresh" not in result.output

    # a new head under another name starts fresh; the old head's weights go unused
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text((ROOT / "specs" / "lenet.yaml").read_text().replace("name: fc3",
                                                                             "name: head"))
    result = netspec("train", renamed, "--init", weights, "--out", tmp_path / "run2", *common)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "init: loaded 8 tensors" in text
    assert "initialised fresh (2): head.weight, head.bias" in text
    assert "not used from the file (2): fc3.weight, fc3.bias" in text

    # a layer whose shape changed is refused, with every difference
    wider = tmp_path / "wider.yaml"
    wider.write_text((ROOT / "specs" / "lenet.yaml").read_text().replace(
        "name: fc1, out_features: 120", "name: fc1, out_features: 100"))
    result = netspec("train", wider, "--init", weights, "--out", tmp_path / "run3", *common)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "3 tensors differ" in text
    assert "fc1.weight: (120, 400) in" in text and "(100, 400) in the network" in text
    assert "fc1.bias" in text and "fc2.weight: (84, 120)" in text
    assert not (tmp_path / "run3" / "checkpoints" / "last.npz").exists()

    usage = netspec("train", "--resume", run, "--init", weights)
    assert usage.exit_code == 2


def test_a_net_ending_in_softmax_trains_evaluates_and_reports(tmp_path):
    """A spec ending in softmax (loss nll on probabilities, as `netspec import` writes for such
    a model) trains, `eval` scores it, and the report's confidences are its own outputs, not
    their softmax again."""
    import numpy as np

    import netspec as ns
    from netspec.viz.report import evaluate_samples

    spec = tmp_path / "soft.yaml"
    spec.write_text((ROOT / "specs" / "lenet.yaml").read_text().replace(
        "  - {type: linear, name: fc3, out_features: 10}\n",
        "  - {type: linear, name: fc3, out_features: 10}\n  - {type: softmax}\n").replace(
        "loss: {type: cross_entropy}", "loss: {type: nll, input: probabilities}"))
    run = tmp_path / "run"
    trained = netspec("train", spec, "--out", run, "--set", f"data.dataset={TINY}", "--set",
                      "train.epochs=1", "--workers", "1", "--no-progress")
    assert trained.exit_code == 0, trained.output
    assert (run / "report.html").exists()
    checkpoint = run / "checkpoints" / "last.npz"
    evaluated = netspec("eval", spec, "--checkpoint", checkpoint, "--set",
                        f"data.dataset={TINY}", "--workers", "1")
    assert evaluated.exit_code == 0, evaluated.output
    assert "accuracy" in evaluated.output

    loaded = ns.load(spec)
    state = dict(np.load(checkpoint))
    plan = ns.compile(loaded)
    plan.load_state_dict({k: v for k, v in state.items() if k in plan.state_dict()})
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    probs = plan.forward(x, train=False)
    samples = evaluate_samples(loaded, plan.state_dict(), x, np.zeros(5, np.int64))
    np.testing.assert_allclose(samples.confidence, probs.max(1), rtol=1e-6)
    np.testing.assert_array_equal(samples.predictions, probs.argmax(1))
