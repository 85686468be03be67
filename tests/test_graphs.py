"""Graph specs: blocks, named inputs, add and concat, from the issue's example to run directories.

The corpus files tests/bad_specs/graph_*.yaml hold the graph errors (each with its line); torch
parity, gradient checks and the schema of the graph specs in specs/ run with every other spec.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import ROOT, TINY, finished_run, resumed_run, stopped_run, train_with_workers
from typer.testing import CliRunner

import netspec
from netspec import checkpoint
from netspec.cli import app
from netspec.plan import compiler
from netspec.plan.gradcheck import check_plan, check_spec
from netspec.spec.blocks import expand
from netspec.spec.yamlio import load_yaml
from netspec.train.run import Run

EXAMPLE = ROOT / "examples" / "graph-issue10.yaml"  # the example of issue 10, verbatim
SEQUENTIAL = sorted(p for p in (ROOT / "specs").glob("*.yaml") if "blocks:" not in p.read_text()
                    and "inputs:" not in p.read_text())


def batch(spec, n=32, start=0):
    from netspec.data import load_dataset, prepare

    x, y = prepare(load_dataset(TINY, download_missing=False), "standardize")["train"]
    return x[start:start + n].reshape(n, *spec.input.shape), y[start:start + n]


# ------------------------------------------------------------------ the issue's example


def test_issue_example_expands_as_written():
    spec = netspec.load(EXAMPLE)
    params = netspec.compile(spec).params
    for name in ("layer1.0.conv1.weight", "layer1.1.conv1.weight", "layer2.conv1.weight",
                 "layer2.bn2.bias", "side.weight", "stem.bias", "fc.weight"):
        assert name in params, name
    assert not any(k.startswith("layer2.0.") for k in params)  # no repeat: no index
    infos = {i.name: i for i in spec.infos}
    assert infos["layer1.0.conv1"].inputs == ("stem_relu",)  # a block's in: the layer above
    assert infos["layer1.0.add5"].inputs == ("layer1.0.bn2", "stem_relu")
    assert infos["layer1.1.add5"].inputs == ("layer1.1.bn2", "layer1.0.relu6")  # chained copy
    assert infos["side"].inputs == ("stem_relu",)
    assert infos["cat"].inputs == ("layer2.relu6", "side")  # a block's name: its last layer
    assert infos["cat"].in_shape == ((16, 28, 28), (8, 28, 28))
    assert infos["cat"].out_shape == (24, 28, 28)
    assert spec.infos[-1].out_shape == (10,)
    # the flat form written to run directories loads back to the same network
    again = netspec.loads(spec.to_yaml(), "resolved.yaml")
    assert [(i.name, i.inputs, i.out_shape) for i in again.infos] == [
        (i.name, i.inputs, i.out_shape) for i in spec.infos]


def test_issue_example_trains_and_gradient_checks():
    # the gradient check on 8x8 images: the same graph, ~12x cheaper than at 28x28
    small = netspec.load(EXAMPLE, ["input.shape=[1, 8, 8]", "data.dataset=custom",
                                   "data.num_classes=10"])
    report = check_spec(small)
    assert report.passed, [r for r in report.rows if not r.passed]
    assert {r.type for r in report.rows if r.scope == "layer"} >= {"add", "concat"}

    spec = netspec.load(EXAMPLE)  # training on MNIST images as written
    plan = netspec.compile(spec)
    optimizer = spec.train.optimizer.model_copy(update={"lr": 0.05, "momentum": 0.9})
    opt = optimizer.build(plan.params)
    x, y = batch(spec, n=8)
    losses = []
    for _ in range(5):
        loss, dlogits = spec.loss(plan.forward(x, train=True), y)
        plan.backward(dlogits)
        opt.step(plan.grads, optimizer.lr)
        losses.append(loss)
    assert losses[-1] < 0.8 * losses[0]


def test_validate_table_shows_inputs_where_they_are_not_the_layer_above():
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE)], terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[2].strip(): line for line in result.output.splitlines()
            if line.count("│") > 5 and line.split("│")[1].strip().isdigit()}
    assert "stem_relu" in rows["side"].split("│")[4]
    assert "layer2.relu6" in rows["cat"].split("│")[4]
    assert rows["layer1.0.conv1"].split("│")[4].strip() == ""  # reads the layer above
    plain = CliRunner().invoke(app, ["validate", str(ROOT / "specs" / "lenet.yaml")])
    assert "inputs" not in plain.output  # a chain has no inputs column


NESTED = """
input: {shape: [2, 6, 6]}
blocks:
  unit:
    params: {ch: null}
    layers:
      - {type: conv2d, name: conv, out_channels: $ch, kernel_size: 3, padding: 1}
      - {type: add, name: sum, inputs: [conv, in]}
  stage:
    params: {width: 2}
    layers:
      - {block: unit, name: u, repeat: 2, with: {ch: $width}}
      - {type: relu}
layers:
  - {type: conv2d, name: stem, out_channels: 2, kernel_size: 1}
  - {block: stage, name: s1}
  - {block: unit, name: side, with: {ch: 2}, inputs: [stem]}
  - {type: concat, name: cat, inputs: [s1, side]}
  - {type: flatten}
  - {type: linear, name: fc, out_features: 3}
data: {dataset: custom, num_classes: 3}
"""


def test_blocks_nest_and_their_torch_twin_matches_in_float64():
    spec = netspec.loads(NESTED, "nested.yaml")
    infos = {i.name: i.inputs for i in spec.infos}
    assert infos["s1.u.0.sum"] == ("s1.u.0.conv", "stem")  # `in` of a nested block
    assert infos["s1.u.1.conv"] == ("s1.u.0.sum",)  # repeat chains the copies
    assert infos["side.conv"] == ("stem",)  # a block use's inputs: its `in`
    assert infos["cat"] == ("s1.relu1", "side.sum")
    torch = pytest.importorskip("torch", reason="needs torch")
    from netspec.interop.torch_bridge import to_torch

    plan = netspec.compile(spec, "float64")
    module = to_torch(spec, plan)
    assert sorted(module.state_dict()) == sorted(plan.state_dict())
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
    xt = torch.tensor(x, requires_grad=True)
    yt = module(xt)
    dy = np.random.default_rng(1).standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(plan.forward(x, train=True), yt.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(plan.backward(dy), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    for name, p in module.named_parameters():
        np.testing.assert_allclose(plan.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_a_block_cannot_contain_itself():
    text = NESTED.replace("{block: unit, name: u, repeat: 2, with: {ch: $width}}",
                          "{block: stage, name: u}")
    with pytest.raises(netspec.SpecError, match=r"nested.yaml:12:10: .*block 'stage' uses "
                                                r"itself \(through stage -> stage\)"):
        netspec.loads(text, "nested.yaml")


# ------------------------------------------------------------------ the plan


FAN_OUT = """
input: {shape: [6]}
layers:
  - {type: linear, name: fc1, out_features: 5}
  - {type: tanh, name: a, inputs: [fc1]}
  - {type: relu, name: b, inputs: [fc1]}
  - {type: add, name: ab, inputs: [a, b, fc1]}
  - {type: relu, name: c}
  - {type: sigmoid, name: d, inputs: [ab]}
  - {type: add, name: cd, inputs: [c, d]}
  - {type: linear, name: fc2, out_features: 3}
data: {dataset: custom, num_classes: 3}
"""
# Two fan-outs of the same shape, one after the other: the second reuses the first's buffer.
CHAIN = """
input: {shape: [6]}
layers:
  - {type: linear, name: fc1, out_features: 5}
  - {type: relu, name: a}
  - {type: add, name: s1, inputs: [a, fc1]}
  - {type: linear, name: fc2, out_features: 5}
  - {type: relu, name: b}
  - {type: add, name: s2, inputs: [b, fc2]}
  - {type: linear, name: fc3, out_features: 3}
data: {dataset: custom, num_classes: 3}
"""


def fan_out_check(spec, plan):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6))
    labels = np.array([0, 1, 2, 1])
    return check_plan(plan, lambda out: spec.loss(out, labels), x, spec.gradcheck, rng)


def test_fan_out_sums_gradients_in_place():
    for text in (FAN_OUT, CHAIN):
        spec = netspec.loads(text, "fan-out.yaml")
        plan = netspec.compile(spec, "float64")
        rows = fan_out_check(spec, plan)
        assert all(r.passed and r.checked for r in rows), [r for r in rows if not r.passed]
    # CHAIN: each sum starts in the copy of dy the add hands its second input: no buffer
    assert not any(plan._pool.values())


def shared_dy(plan):
    """'ab' hands one dy to both a and fc1 (and a copy to b), as a layer may: fc1's sum must
    then start in a buffer of its own, since tanh 'a' overwrites its dy."""
    step = next(s for s in plan.steps if s.name == "ab")
    step.backward = lambda dy, need: [dy, dy.copy(), dy]


def test_a_shared_dx_sums_in_a_pooled_buffer():
    spec = netspec.loads(FAN_OUT, "fan-out.yaml")
    plan = netspec.compile(spec, "float64")
    shared_dy(plan)
    rows = fan_out_check(spec, plan)
    assert all(r.passed and r.checked for r in rows), [r for r in rows if not r.passed]
    assert {k: len(v) for k, v in plan._pool.items()} == {(5, 4): 1}  # used, then freed


def test_summing_into_a_shared_dx_would_be_caught(monkeypatch):
    """Negative control: starting fc1's sum in the dy that 'a' also got fails the check."""
    monkeypatch.setattr(compiler, "_alone", lambda *a: True)
    spec = netspec.loads(FAN_OUT, "fan-out.yaml")
    plan = netspec.compile(spec, "float64")
    shared_dy(plan)
    assert not all(r.passed for r in fan_out_check(spec, plan))


def test_a_layer_overwriting_a_shared_dy_would_be_caught():
    """Negative control: if add handed the same dy to every input (so relu 'b' overwrote the
    gradient that 'a' and fc1 also read), the gradient check fails."""
    spec = netspec.loads(FAN_OUT, "fan-out.yaml")
    plan = netspec.compile(spec, "float64")
    step = next(s for s in plan.steps if s.name == "ab")
    step.backward = lambda dy, need: [dy, dy, dy]
    assert not all(r.passed for r in fan_out_check(spec, plan))


def test_an_output_nobody_reads_is_an_error():
    text = FAN_OUT.replace("inputs: [c, d]", "inputs: [c, ab]")
    with pytest.raises(netspec.SpecError, match="output of 'd' is never used"):
        netspec.loads(text, "dead.yaml")


# ------------------------------------------------------------------ sequential specs unchanged


@pytest.mark.parametrize("path", SEQUENTIAL, ids=[p.name for p in SEQUENTIAL])
def test_a_sequential_spec_expands_to_itself(path):
    src = load_yaml(path.read_text(), str(path))
    before = repr(src.data)
    flat, problems = expand(src)
    assert not problems and repr(flat.data) == before
    assert "inputs" not in netspec.load(path).to_yaml()  # so its digest is what it was


def test_a_checkpoint_from_before_graphs_resumes_as_before(tmp_path, tiny_splits):
    """tests/fixtures/pre-graph-run: one epoch trained by the code before graphs. Resumed for a
    second epoch now, it must end where two epochs from scratch end now.

    The fixture's first epoch was computed with one BLAS kernel (OpenBLAS SkylakeX), and another
    (Zen, Haswell) rounds differently, so the two runs agree to rounding, not bit for bit: 1e-5
    of the weights' scale. A changed shuffle, init or update would move them by orders of
    magnitude more (the negative control below). Bit-identical resume on one machine is tested
    in test_train.py."""
    old = ROOT / "tests" / "fixtures" / "pre-graph-run"
    shutil.copytree(old, tmp_path / "old")
    spec = netspec.load(old / "spec.yaml", ["train.epochs=2"])
    resumed = Run(spec, tiny_splits, tmp_path / "old")
    resumed.resume()  # the spec digest and every parameter name still match
    assert resumed.fit()
    fresh = Run(spec, tiny_splits, tmp_path / "fresh")
    fresh.start()
    assert fresh.fit()
    a, b = (checkpoint.load(r.last_path).state for r in (resumed, fresh))
    assert a.keys() == b.keys() == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    for k in a:
        assert np.max(np.abs(a[k] - b[k])) <= 1e-5 * np.max(np.abs(b[k])), k
    other = Run(netspec.load(old / "spec.yaml", ["train.epochs=2", "seed=6"]), tiny_splits,
                tmp_path / "other")  # negative control: another seed, another run
    other.start()
    assert other.fit()
    c, w = checkpoint.load(other.last_path).state["fc1.weight"], b["fc1.weight"]
    assert np.max(np.abs(c - w)) > 1e-2 * np.max(np.abs(w))


# ------------------------------------------------------------------ runs, workers, resume


def test_graph_spec_resumes_mid_epoch_bit_identically(tmp_path, tiny_splits):
    def spec():
        return netspec.load(ROOT / "specs" / "resnet-mini.yaml",
                            ["train.epochs=1", "train.batch_size=16"])

    tiny_splits = {k: (x[:64], y[:64]) for k, (x, y) in tiny_splits.items()}  # 4 steps
    reference = finished_run(spec(), tiny_splits, tmp_path / "a")
    stopped_run(spec(), tiny_splits, tmp_path / "b", 1)  # after 2 of 4 steps
    resumed = resumed_run(spec(), tiny_splits, tmp_path / "b")
    a, b = (checkpoint.load(r.last_path).state for r in (reference, resumed))
    assert "layer1.1.conv2.weight" in a and "layer2.proj_bn.running_var" in a
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_graph_spec_trains_in_worker_processes_like_in_one(tiny_splits):
    spec = netspec.load(ROOT / "specs" / "inception-mini.yaml",
                        ["train.batch_size=128", "layers[7].p=0"])
    finals = []
    for workers in (1, 2):
        trainer, stats = train_with_workers(spec, tiny_splits, workers)
        assert trainer.workers == workers
        finals.append((trainer.plan.flat_params.copy(), stats.loss))
    np.testing.assert_allclose(finals[1][0], finals[0][0], rtol=1e-8, atol=1e-10)
    assert finals[1][1] == pytest.approx(finals[0][1], rel=1e-8)


# ------------------------------------------------------------------ shape inference, pure


def layers(*items):
    from netspec.nn.layers import LAYERS

    return [LAYERS[d["type"]].model_validate(d) for d in items]


def test_infer_is_a_function_of_the_input_shape_and_the_layers():
    from netspec.plan.shapes import infer

    net = layers({"type": "linear", "name": "a", "out_features": 3},
                 {"type": "linear", "name": "b", "out_features": 2, "inputs": ["input"]},
                 {"type": "concat", "name": "c", "inputs": ["a", "b", "input"]})
    infos = infer((4,), net)
    assert [(i.name, i.inputs, i.in_shape, i.out_shape) for i in infos] == [
        ("a", ("input",), (4,), (3,)), ("b", ("input",), (4,), (2,)),
        ("c", ("a", "b", "input"), ((3,), (2,), (4,)), (9,))]
    assert infer((4,), net) == infos  # nothing else goes in


@pytest.mark.parametrize("items, message", [
    ([{"type": "flatten", "name": "f"}, {"type": "concat", "inputs": ["f", "input"]}],
     "inputs differ in rank: 'f' (48,) vs 'input' (3, 4, 4)"),
    ([{"type": "maxpool2d", "name": "p", "kernel_size": 2},
      {"type": "concat", "inputs": ["input", "p"]}],
     "inputs differ in height (dimension 1): 'input' (3, 4, 4) vs 'p' (3, 2, 2)"),
    ([{"type": "flatten", "name": "f"}, {"type": "add", "inputs": ["f", "f", "input"]}],
     "add 'add1': inputs differ: 'f' (48,) vs 'input' (3, 4, 4)"),
    ([{"type": "relu", "name": "r"}, {"type": "add", "inputs": ["r"]}],
     "add needs two or more inputs"),
    ([{"type": "relu", "name": "r"}, {"type": "relu", "inputs": ["r", "input"]}],
     "relu reads one input, got 2"),
    ([{"type": "relu", "name": "r", "inputs": ["s"]}, {"type": "relu", "name": "s"}],
     "'s' is defined further down (layers[1])"),
])
def test_infer_names_the_inputs_and_shapes_of_a_graph_problem(items, message):
    from netspec.plan.shapes import GraphError, infer

    with pytest.raises(GraphError) as info:
        infer((3, 4, 4), layers(*items))
    assert any(message in p.message for p in info.value.problems), info.value


def test_a_multi_input_layer_is_checked_alone_through_a_plan_and_can_fail(monkeypatch):
    from netspec.nn.layers.concat import Concat
    from netspec.plan.gradcheck import check_multi_input

    spec = netspec.load(ROOT / "specs" / "inception-mini.yaml")
    info = next(i for i in spec.infos if i.type == "concat")  # inputs of 6, 6 and 4 channels
    rows = check_multi_input(info, spec.gradcheck, np.random.default_rng(0), line=20)
    assert [(r.layer, r.tensor, r.line, r.passed) for r in rows] == [
        ("mixed1.cat", "input", 20, True)]
    build = Concat.build

    def wrong(self, ctx):  # the first input's gradient 5% off
        forward, backward = build(self, ctx)
        return forward, lambda dy, need: [d * 1.05 if k == 0 else d
                                          for k, d in enumerate(backward(dy, need))]

    monkeypatch.setattr(Concat, "build", wrong)
    rows = check_multi_input(info, spec.gradcheck, np.random.default_rng(0))
    assert not rows[0].passed
