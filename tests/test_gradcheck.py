"""Every spec in specs/ is gradient-checked (one test item each), and the checker can fail."""

import numpy as np
import pytest
from conftest import SPECS
from typer.testing import CliRunner

import netspec
from netspec.cli import app
from netspec.plan.gradcheck import check_plan, check_spec


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_gradcheck(path):
    report = check_spec(netspec.load(path))
    failed = [r for r in report.rows if not r.passed]
    assert not failed, "\n".join(f"{r.scope} {r.layer}.{r.tensor}: rel {r.rel_err:.2e} at "
                                 f"{r.index} (line {r.line})" for r in failed)
    spec = netspec.load(path)
    tensors = {(r.layer, r.tensor) for r in report.rows if r.scope == "network"}
    expected = {tuple(k.rsplit(".", 1)) for k in netspec.compile(spec).params}
    assert expected | {("input", "input")} == tensors  # every parameter tensor and the input
    assert all(r.checked > 0 for r in report.rows)


def _lenet_plan():
    spec = netspec.load(SPECS[0].parent / "lenet.yaml")
    return spec, netspec.compile(spec, dtype="float64")


def _check(spec, plan):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *plan.in_shape))
    labels = rng.integers(0, 10, 2)
    return check_plan(plan, lambda out: spec.loss(out, labels), x, spec.gradcheck, rng)


def test_negative_control_wrong_input_gradient_fails_at_that_layer():
    spec, plan = _lenet_plan()
    step = next(s for s in plan.steps if s.name == "conv2")
    right = step.backward

    def wrong(dy, need_dx=True):
        dx = right(dy, need_dx)
        return dx * 1.05  # a 5% error in dL/dx

    step.backward = wrong
    rows = _check(spec, plan)
    by_tensor = {(r.layer, r.tensor): r for r in rows}
    assert not by_tensor[("input", "input")].passed
    assert not by_tensor[("conv1", "weight")].passed  # everything upstream of conv2 is wrong
    assert by_tensor[("conv2", "weight")].passed  # conv2's own gradient is still right
    assert by_tensor[("fc1", "weight")].passed


def test_negative_control_wrong_parameter_gradient_fails_that_tensor_only():
    spec, plan = _lenet_plan()
    step = next(s for s in plan.steps if s.name == "fc2")
    right = step.backward

    def wrong(dy, need_dx=True):
        dx = right(dy, need_dx)
        step.ctx.grads["bias"] *= -1  # sign error in db
        return dx

    step.backward = wrong
    failed = {(r.layer, r.tensor) for r in _check(spec, plan) if not r.passed}
    assert failed == {("fc2", "bias")}


def test_correct_plan_passes_the_same_check():
    spec, plan = _lenet_plan()
    assert all(r.passed for r in _check(spec, plan))


def test_cli_gradcheck_exit_codes(monkeypatch):
    ok = CliRunner().invoke(app, ["gradcheck", str(SPECS[0].parent / "mlp.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "passed" in ok.output

    from netspec.nn.layers import linear

    original = linear.Linear.build

    def broken_build(self, ctx):
        forward, backward = original(self, ctx)

        def bad_backward(dy, need_dx=True):
            dx = backward(dy, need_dx)
            ctx.grads["weight"] *= 1.1
            return dx

        return forward, bad_backward

    monkeypatch.setattr(linear.Linear, "build", broken_build)
    bad = CliRunner().invoke(app, ["gradcheck", str(SPECS[0].parent / "mlp.yaml")])
    assert bad.exit_code == 1
    assert "FAILED" in bad.output and "FAIL" in bad.output


# Zero weights put every hidden unit of fc1 exactly at relu's kink: any +-eps step of an fc1
# parameter moves a unit off it, so every sampled entry of fc1.weight and fc1.bias is skipped.
# check_spec redraws such constant tensors before the network-level check (generic values), so
# this is checked through check_plan at the init; tests/test_gradcheck_generic.py has the rest.
ALL_AT_KINKS = """
name: kinks
input: {shape: [4]}
layers:
  - {type: linear, name: fc1, out_features: 3, init: {weight: zeros, bias: zeros}}
  - {type: relu}
  - {type: linear, name: fc2, out_features: 2}
data: {dataset: custom-dir, num_classes: 2}
"""


def test_a_tensor_with_every_entry_at_a_kink_fails(tmp_path):
    spec = netspec.loads(ALL_AT_KINKS, "kinks.yaml")
    plan = netspec.compile(spec, dtype="float64")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4))
    rows = {(r.layer, r.tensor): r for r in check_plan(
        plan, lambda out: spec.loss(out, np.array([0, 1])), x, spec.gradcheck, rng)}
    for key in (("fc1", "weight"), ("fc1", "bias")):
        assert rows[key].checked == 0 and rows[key].skipped > 0 and not rows[key].passed
        assert "sit at kinks" in rows[key].problem and "gradcheck.eps" in rows[key].problem
    assert rows["fc2", "weight"].checked > 0 and rows["fc2", "weight"].passed  # control
