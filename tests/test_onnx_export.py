"""ONNX export against netspec itself: every spec, every layer example, negative controls.

Each spec in specs/*.yaml (collected by glob) and each registered layer's `examples` is exported
and verified with netspec.interop.onnx_check.verify: onnx.checker (full_check), ONNX shape inference
against netspec's shapes at every layer, and onnxruntime's logits against the plan's eval-mode
forward within 1e-5 (float32). Specs run on a real batch (tests/fixtures/mnist-tiny), with
random biases and batchnorm statistics, so that a mapping that drops a bias or uses the wrong
statistics cannot pass by accident of the initialisation. Deliberately wrong mappings must fail
(negative controls). The accuracy test checks the done-criterion on the tiny fixture: after a
short training run, netspec's evaluation and onnxruntime agree on the test accuracy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import randomized

import netspec
from netspec.nn.layers import LAYERS
from netspec.spec.model import NetSpec

onnx = pytest.importorskip("onnx", reason="ONNX export needs pip install 'netspec[onnx]'")
pytest.importorskip("onnxruntime", reason="ONNX checks need pip install 'netspec[onnx]'")

from netspec.interop.onnx_check import TOL, run, verify
from netspec.interop.onnx_export import INPUT, IR_VERSION, OPSET, OUTPUT, to_onnx

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
TINY = ROOT / "tests" / "fixtures" / "mnist-tiny"
NORM = {"normalize": "standardize", "mean": 0.13, "std": 0.31}
CASES = [(tag, i, fields, tuple(shape))
         for tag, cls in sorted(LAYERS.items()) for i, (fields, shape) in enumerate(cls.examples)]


def layer_spec(tag: str, fields: dict, in_shape) -> NetSpec:
    """A one-layer network (a custom dataset name skips the MNIST shape and class checks; mse,
    since a lone softmax layer is no classifier for cross_entropy)."""
    return NetSpec.model_validate({"input": {"shape": list(in_shape)},
                                   "layers": [{"type": tag, **fields}],
                                   "data": {"dataset": "custom-dir"}, "loss": {"type": "mse"}})


def assert_passes(report):
    assert report.passed, "\n".join(f"{r.check} {r.subject}: expected {r.expected}, "
                                    f"found {r.found}" for r in report.failures)


# ---------------------------------------------------------------- every spec, every example


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_spec_exports_and_matches_onnxruntime(path, tiny_splits):
    spec = netspec.load(path)
    plan = randomized(spec)
    model = to_onnx(spec, plan, NORM)
    x, y = tiny_splits["test"]
    classes = spec.infos[-1].out_shape[0]
    if np.prod(spec.input.shape) == 28 * 28:
        x = x.reshape(len(x), *spec.input.shape)  # (N, 1, 28, 28), or (N, 784) for an MLP
    else:  # colour images or table rows: seeded samples of the spec's shape
        x = np.random.default_rng(0).standard_normal((64, *spec.input.shape)).astype(np.float32)
        y = y[:64] % classes
    report = verify(model, spec, plan, x, y)
    assert_passes(report)
    assert report.logits_error <= TOL
    shape_rows = [r for r in report.rows if r.check == "shape"]
    assert len(shape_rows) == len(spec.infos)  # a shape check at every layer

    # the model's interface, names and versions
    assert model.ir_version == IR_VERSION and model.opset_import[0].version == OPSET
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == (INPUT, OUTPUT)
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", *spec.input.shape]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", classes]
    assert {t.name for t in model.graph.initializer} == set(plan.params) | set(plan.buffers)
    mapped = {i.name for i in spec.infos if i.type != "dropout"}
    assert mapped <= {n.name for n in model.graph.node}  # nodes carry the layer names
    assert "Dropout" not in {n.op_type for n in model.graph.node}
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["netspec.normalize"] == "standardize"
    assert float(meta["netspec.mean"]) == NORM["mean"] and float(meta["netspec.std"]) == 0.31
    # the documented keys (docs/onnx.md): the resolved spec loads back as the same network
    assert netspec.loads(meta["netspec.spec"]).digest() == spec.digest()
    assert meta["netspec.spec_sha256"] == spec.digest()


@pytest.mark.parametrize(("tag", "i", "fields", "in_shape"), CASES,
                         ids=[f"{tag}-{i}" for tag, i, _, _ in CASES])
def test_layer_example_matches_onnxruntime(tag, i, fields, in_shape):
    spec = layer_spec(tag, fields, in_shape)
    plan = randomized(spec, seed=i)
    x = np.random.default_rng(i).standard_normal((5, *in_shape)).astype(np.float32)
    assert_passes(verify(to_onnx(spec, plan, NORM), spec, plan, x))


def test_every_layer_type_maps():
    missing = [tag for tag, cls in LAYERS.items() if not hasattr(cls, "to_onnx")]
    assert not missing, f"layer types without to_onnx: {missing}"


def test_layer_names_that_clash_with_the_model_interface_are_errors():
    from netspec.errors import ExportError, SpecError

    def spec(first, last):
        s = NetSpec.model_validate({
            "input": {"shape": [4]}, "data": {"dataset": "custom-dir"},
            "layers": [{"type": "linear", "name": first, "out_features": 3},
                       {"type": "linear", "name": last, "out_features": 2}]})
        assert s.infos  # shape inference runs (and may refuse the name) here
        return s

    for first in ("input", "logits"):
        try:
            s = spec(first, "fc2")
        except SpecError:  # graph specs reserve 'input' (the network's input) themselves
            assert first == "input"
            continue
        with pytest.raises(ExportError, match=f"layers\\[0\\].*'{first}' names the model's"):
            to_onnx(s, netspec.compile(s), NORM)
    s = spec("fc1", "logits")  # the last layer may be called logits
    plan = randomized(s)
    assert_passes(verify(to_onnx(s, plan, NORM), s, plan, np.ones((2, 4), np.float32)))


def test_a_layer_can_refuse_a_configuration_with_a_located_error(monkeypatch):
    from netspec.errors import ExportError

    def refuse(self, g, x):
        raise g.unsupported("dilation 7 is not supported")

    monkeypatch.setattr(LAYERS["conv2d"], "to_onnx", refuse)
    spec = netspec.load(ROOT / "specs" / "lenet.yaml")
    with pytest.raises(ExportError) as e:
        to_onnx(spec, netspec.compile(spec), NORM)
    (problem,) = e.value.problems
    lines = (ROOT / "specs" / "lenet.yaml").read_text().splitlines()
    assert Path(problem.file).name == "lenet.yaml"
    assert "name: conv1" in lines[problem.line - 1]
    assert problem.path == "layers[0] (conv2d 'conv1')"
    assert problem.message == "cannot export to ONNX: dilation 7 is not supported"


def test_nodes_are_wired_by_producer_names_not_list_order():
    """A graph (fan-out and a skip connection) wires each node to the layers its `inputs`
    name, as graph specs will give them: fc1 -> relu -> sum(fc1, relu) -> fc2."""
    from types import SimpleNamespace

    from netspec.interop.onnx_export import build_graph

    class Sum:  # a stand-in two-input layer (graph specs bring `add`)
        type = "sum"

        def to_onnx(self, g, a, b):
            return g.node("Add", [a, b])

    def info(i, name, layer, inputs, shape):
        return SimpleNamespace(index=i, name=name, layer=layer, type=layer.type,
                               inputs=inputs, in_shape=shape, out_shape=shape)

    fc1, fc2 = LAYERS["linear"](out_features=3), LAYERS["linear"](out_features=2)
    spec = SimpleNamespace(infos=[
        info(0, "fc1", fc1, ("input",), (3,)), info(1, "act", LAYERS["relu"](), ("fc1",), (3,)),
        info(2, "sum", Sum(), ("fc1", "act"), (3,)), info(3, "fc2", fc2, ("sum",), (2,))])
    rng = np.random.default_rng(0)
    state = {k: rng.standard_normal(s).astype(np.float32) for k, s in [
        ("fc1.weight", (3, 4)), ("fc1.bias", (3,)), ("fc2.weight", (2, 3)), ("fc2.bias", (2,))]}
    nodes, inits, outputs = build_graph(spec, state)
    assert [list(n.input) for n in nodes] == [
        ["input", "fc1.weight", "fc1.bias"], ["fc1"], ["fc1", "act"],
        ["sum", "fc2.weight", "fc2.bias"]]
    assert outputs == {"fc1": "fc1", "act": "act", "sum": "sum", "fc2": OUTPUT}
    h = onnx.helper
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info(INPUT, 1, ["N", 4])],
                         [h.make_tensor_value_info(OUTPUT, 1, ["N", 2])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)],
                         ir_version=IR_VERSION)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    z = x @ state["fc1.weight"].T + state["fc1.bias"]
    want = (z + np.maximum(z, 0)) @ state["fc2.weight"].T + state["fc2.bias"]
    np.testing.assert_allclose(run(model, x), want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- negative controls


def wrong(monkeypatch, tag: str, op: str, **attrs):
    """Patch layer `tag`'s mapping so that its `op` node gets `attrs` (a deliberate bug)."""
    cls = LAYERS[tag]
    right = cls.to_onnx

    def patched(self, g, *xs):
        node = g.node

        def bad_node(o, inputs, **kw):
            return node(o, inputs, **{**kw, **attrs}) if o == op else node(o, inputs, **kw)

        g.node = bad_node
        return right(self, g, *xs)

    monkeypatch.setattr(cls, "to_onnx", patched)


def failed_checks(spec, plan, x) -> set[str]:
    return {r.check for r in verify(to_onnx(spec, plan, NORM), spec, plan, x).failures}


def test_wrong_count_include_pad_fails(monkeypatch):
    spec = layer_spec("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 6))
    plan = randomized(spec)
    x = np.random.default_rng(0).standard_normal((4, 2, 5, 6)).astype(np.float32)
    assert_passes(verify(to_onnx(spec, plan, NORM), spec, plan, x))
    wrong(monkeypatch, "avgpool2d", "AveragePool", count_include_pad=0)  # ONNX's default
    assert failed_checks(spec, plan, x) == {"logits"}


def test_symmetric_same_padding_fails(monkeypatch):
    # kernel 2 with padding 'same' pads one pixel at the bottom/right only (as torch)
    spec = layer_spec("conv2d", {"out_channels": 2, "kernel_size": 2, "padding": "same"},
                      (1, 5, 4))
    plan = randomized(spec)
    x = np.random.default_rng(0).standard_normal((4, 1, 5, 4)).astype(np.float32)
    wrong(monkeypatch, "conv2d", "Conv", pads=[1, 1, 0, 0])  # the extra pixel at the top/left
    assert failed_checks(spec, plan, x) == {"logits"}


def test_ceil_mode_fails_the_shape_check(monkeypatch):
    spec = layer_spec("maxpool2d", {"kernel_size": 2}, (2, 5, 5))  # floor mode: (2, 2, 2)
    plan = randomized(spec)
    x = np.random.default_rng(0).standard_normal((4, 2, 5, 5)).astype(np.float32)
    wrong(monkeypatch, "maxpool2d", "MaxPool", ceil_mode=1)  # (2, 3, 3)
    assert {"shape", "logits"} <= failed_checks(spec, plan, x)


def test_gemm_without_transpose_fails_the_checker(monkeypatch):
    spec = layer_spec("linear", {"out_features": 3}, (5,))
    plan = randomized(spec)
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    wrong(monkeypatch, "linear", "Gemm", transB=0)  # (N, 5) @ (3, 5): incompatible
    assert {"checker", "shape", "logits"} <= failed_checks(spec, plan, x)


def test_concat_on_the_wrong_axis_fails(monkeypatch):
    spec = layer_spec("concat", {"inputs": ["input", "input"]}, (2, 3, 3))
    plan = randomized(spec)
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    assert_passes(verify(to_onnx(spec, plan, NORM), spec, plan, x))
    wrong(monkeypatch, "concat", "Concat", axis=2)  # along H: (N, 2, 6, 3)
    assert {"shape", "logits"} <= failed_checks(spec, plan, x)


def test_graph_spec_keeps_nested_names():
    spec = netspec.load(ROOT / "specs" / "resnet-mini.yaml")
    model = to_onnx(spec, randomized(spec), NORM)
    inits = {t.name for t in model.graph.initializer}
    assert "layer1.0.conv1.weight" in inits and "layer2.proj_bn.running_var" in inits
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert [n.name for n in adds] == ["layer1.0.sum", "layer1.1.sum", "layer2.sum"]
    assert list(adds[0].input) == ["layer1.0.bn2", "stem_relu"]  # the skip connection


def test_wrong_batchnorm_eps_fails(monkeypatch):
    spec = layer_spec("batchnorm", {"eps": 1e-3}, (3, 2, 2))
    plan = randomized(spec)
    plan.buffers["batchnorm0.running_var"][...] = 1e-3  # where eps matters
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    assert_passes(verify(to_onnx(spec, plan, NORM), spec, plan, x))
    wrong(monkeypatch, "batchnorm", "BatchNormalization", epsilon=1e-5)  # ONNX's default
    assert failed_checks(spec, plan, x) == {"logits"}


# ---------------------------------------------------------------- done-criterion: accuracy


def test_accuracy_equals_netspec_eval_after_training(tiny_splits):
    """netspec's evaluation (what `netspec eval` runs) and onnxruntime score the same
    accuracy on the same checkpoint state, after a short training run of the reference LeNet."""
    from netspec.train.trainer import Trainer

    spec = netspec.load(ROOT / "specs" / "lenet.yaml", ["train.epochs=1"])
    trainer = Trainer(spec, tiny_splits, workers=1)
    trainer.train_epoch()
    x, y = tiny_splits["test"]
    mine = trainer.evaluate(x, y)
    assert mine.accuracy > 0.3  # it learned something, so the comparison means something
    logits = run(to_onnx(spec, trainer.plan, NORM), x)
    assert np.array_equal(logits.argmax(1), mine.predictions)
    assert float(np.mean(logits.argmax(1) == y)) == mine.accuracy


# ---------------------------------------------------------------- the docs' snippet


def docs_snippet() -> str:
    text = (ROOT / "docs" / "onnx.md").read_text()
    m = re.search(r"<!-- onnxruntime snippet[^>]*-->\s*```python\n(.*?)```", text, re.DOTALL)
    assert m, "docs/onnx.md lost its onnxruntime snippet"
    return m.group(1)


def test_docs_onnxruntime_snippet_runs(tmp_path, tiny_splits):
    spec = netspec.load(ROOT / "specs" / "lenet.yaml")
    plan = randomized(spec)
    norm = {"normalize": "standardize", "mean": tiny_splits.mean, "std": tiny_splits.std}
    (tmp_path / "lenet.onnx").write_bytes(to_onnx(spec, plan, norm).SerializeToString())
    script = tmp_path / "snippet.py"
    script.write_text(docs_snippet())
    env = {**os.environ, "NETSPEC_DATA": str(TINY)}
    done = subprocess.run([sys.executable, str(script)], check=False, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    x, y = tiny_splits["test"]
    accuracy = float(np.mean(plan.forward(x).argmax(1) == y))
    assert f"accuracy {accuracy:.2%}" in done.stdout, done.stdout
