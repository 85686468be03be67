"""The network-level gradient check runs at generic parameter values, so that every tensor of
any valid spec can be checked: zero-initialised biases that put a kink exactly under every
+-eps step (issue 23) no longer make the check fail whatever the user does."""

import numpy as np
from typer.testing import CliRunner

import netspec
from netspec.cli import app
from netspec.plan.gradcheck import check_plan, check_spec

# A relu, then a 1x1 conv whose bias starts at zero, then a leaky relu: where every channel of
# the relu's output is 0 the conv outputs exactly its bias, so at the init every +-eps step of
# a.bias crosses the leaky relu's kink.
KINKS = """
name: kinks
seed: 0
input: {shape: [1, 28, 28]}
layers:
  - {type: conv2d, name: stem, out_channels: 6, kernel_size: 3, stride: 2}
  - {type: relu}
  - {type: conv2d, name: a, out_channels: 3, kernel_size: 1}
  - {type: leaky_relu, negative_slope: 0.2}
  - {type: flatten}
  - {type: linear, out_features: 10}
loss: {type: cross_entropy}
data: {dataset: mnist}
train: {epochs: 1, batch_size: 32, optimizer: {type: sgd, lr: 0.05}}
"""


def test_a_zero_bias_under_every_kink_is_checked_at_generic_values():
    spec = netspec.loads(KINKS, "kinks.yaml")
    for seed in (0, 1, 2):
        for batch in (2, 5):
            cfg = spec.gradcheck.model_copy(update={"seed": seed, "batch_size": batch})
            report = check_spec(spec, cfg, isolated=False)
            rows = {(r.layer, r.tensor): r for r in report.rows}
            assert rows["a", "bias"].checked > 0, (seed, batch)
            assert report.passed, report.problems


def test_the_cli_passes_the_spec_of_the_issue(tmp_path):
    path = tmp_path / "kinks.yaml"
    path.write_text(KINKS)
    result = CliRunner().invoke(app, ["gradcheck", str(path)])
    assert result.exit_code == 0, result.output
    assert "passed" in result.output


def test_the_init_itself_is_left_alone():
    """Generic values are the plan's own business: the spec's init is what training uses."""
    spec = netspec.loads(KINKS, "kinks.yaml")
    before = {k: v.copy() for k, v in netspec.compile(spec, "float64").params.items()}
    check_spec(spec, isolated=False)
    after = netspec.compile(spec, "float64").params
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert not before["a.bias"].any()  # zeros, as initialised


ZERO_WEIGHTS = """
name: zeros
input: {shape: [4]}
layers:
  - {type: linear, name: fc1, out_features: 3, init: {weight: zeros, bias: zeros}}
  - {type: relu}
  - {type: linear, name: fc2, out_features: 2}
data: {dataset: custom-dir, num_classes: 2}
"""


def test_constant_tensors_are_drawn_generic_and_then_checked():
    report = check_spec(netspec.loads(ZERO_WEIGHTS, "zeros.yaml"), isolated=False)
    assert report.passed, report.problems
    assert all(r.checked > 0 for r in report.rows)


def test_negative_control_a_wrong_bias_gradient_still_fails_at_generic_values(monkeypatch):
    from netspec.nn.layers import conv2d

    original = conv2d.Conv2d.build

    def broken_build(self, ctx):
        forward, backward = original(self, ctx)

        def bad_backward(dy, need_dx=True):
            dx = backward(dy, need_dx)
            if "bias" in ctx.grads:
                ctx.grads["bias"] *= 0.9
            return dx

        return forward, bad_backward

    monkeypatch.setattr(conv2d.Conv2d, "build", broken_build)
    report = check_spec(netspec.loads(KINKS, "kinks.yaml"), isolated=False)
    failed = {(r.layer, r.tensor) for r in report.rows if not r.passed}
    assert ("a", "bias") in failed and ("stem", "bias") in failed
    assert ("linear5", "weight") not in failed


def test_all_entries_at_kinks_still_fails_and_the_advice_works(tmp_path):
    """At the init (check_plan alone) zero weights sit every entry at a kink: nothing compared
    is no evidence, so that fails. Through check_spec a huge eps still crosses kinks; the
    message's advice (a smaller gradcheck.eps, through --set) then passes."""
    spec = netspec.loads(ZERO_WEIGHTS, "zeros.yaml")
    plan = netspec.compile(spec, "float64")
    rng = np.random.default_rng(0)
    rows = check_plan(plan, lambda out: spec.loss(out, np.array([0, 1])),
                      rng.standard_normal((2, 4)), spec.gradcheck, rng)
    fc1 = {r.tensor: r for r in rows if r.layer == "fc1"}
    assert fc1["weight"].checked == 0 and not fc1["weight"].passed

    path = tmp_path / "wide.yaml"
    path.write_text(ZERO_WEIGHTS + "gradcheck: {eps: 100.0, atol: 1000, rtol: 1000}\n")
    result = CliRunner().invoke(app, ["gradcheck", str(path), "--no-layers"])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "sit at kinks" in text and "gradcheck.eps" in text
    again = CliRunner().invoke(app, ["gradcheck", str(path), "--no-layers",
                                     "--set", "gradcheck.eps=1e-6"])
    assert again.exit_code == 0, again.output
