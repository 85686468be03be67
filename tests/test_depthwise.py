"""conv2d's depthwise algorithm (netspec/kernels/depthwise.py): when the plan's options choose it,
that it equals the im2col-based grouped algorithm (strides, dilations, per-side padding, kernels
wider than the image's phases, blocks of one channel or all, eval and training, a backward
after an eval forward, without dx), that its gradients check, and that a broken backward or
phase image is caught."""

import numpy as np
import pytest

import netspec
from netspec.kernels import depthwise
from netspec.nn.layers import LAYERS
from netspec.plan.compiler import layer_plan
from netspec.plan.gradcheck import check_spec
from netspec.plan.options import PlanOptions


def conv(c, h, w, options=None, **more):
    spec = {"type": "conv2d", "out_channels": c, "kernel_size": 3, "padding": 1, "groups": c,
            **more}
    layer = LAYERS["conv2d"].model_validate(spec)
    plan = layer_plan(layer, (c, h, w), "float64", seed=0, options=options)
    step = plan.steps[0]
    if layer.bias:  # not the zero init, so that a wrong bias path shows
        plan.params[f"{step.name}.bias"][...] = np.linspace(-1, 1, c)
    return plan, step


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def compare(c, h, w, n=3, train=True, need_dx=True, **more):
    """Worst relative difference of y, dx and every gradient between the depthwise algorithm
    ('auto') and the grouped im2col one ('im2col'), over two steps with the weights changed in
    between as an optimizer would."""
    rng = np.random.default_rng(1)
    plans = {algo: conv(c, h, w, PlanOptions(conv=algo), **more) for algo in ("im2col", "auto")}
    assert [p.algorithms() for p, _ in plans.values()] == [{"conv2d": "grouped"},
                                                           {"conv2d": "depthwise"}]
    worst = 0.0
    for _ in range(2):
        x = rng.standard_normal((c, h, w, n))
        got = {}
        for algo, (plan, step) in plans.items():
            y = step.forward(x, train).copy()
            dy = np.random.default_rng(2).standard_normal(y.shape)
            dx = step.backward(dy, need_dx)
            got[algo] = (y, None if dx is None else dx.copy(),
                         {k: v.copy() for k, v in plan.grads.items()})
        (y0, dx0, g0), (y1, dx1, g1) = got["im2col"], got["auto"]
        assert (dx0 is None) == (dx1 is None) == (not need_dx)
        worst = max(worst, rel(y1, y0), *(rel(g1[k], g0[k]) for k in g0),
                    *([rel(dx1, dx0)] if need_dx else []))
        delta = rng.standard_normal(plans["auto"][0].flat_params.shape)
        for plan, _ in plans.values():
            plan.flat_params[...] += 0.1 * delta
    return worst


@pytest.mark.parametrize("c, h, w, more", [
    (4, 9, 9, {}),
    (3, 8, 7, {"stride": 2}),  # MobileNet's strided 3x3
    (3, 9, 10, {"stride": 2, "bias": False}),
    (2, 10, 9, {"stride": 3, "kernel_size": 2, "padding": 0}),  # unused phases: dx zero there
    (3, 7, 6, {"stride": [1, 2], "dilation": [2, 1], "padding": [2, 1]}),
    (2, 11, 11, {"stride": 2, "dilation": 2, "kernel_size": 3, "padding": 3}),
    (2, 9, 8, {"kernel_size": 5, "padding": {"top": 0, "bottom": 2, "left": 1, "right": 3}}),
    (3, 6, 6, {"kernel_size": 1, "padding": 0, "stride": 2}),
    (2, 7, 8, {"kernel_size": [1, 3], "padding": [0, 1]}),
    (2, 3, 3, {"kernel_size": 5, "padding": 1}),  # the kernel larger than the image
])
def test_depthwise_equals_grouped(c, h, w, more):
    assert compare(c, h, w, **more) < 1e-12


@pytest.mark.parametrize("block", [1, 10 ** 9])  # one channel per block; all at once
def test_blocks_of_channels(block, monkeypatch):
    monkeypatch.setattr(depthwise, "BLOCK_BYTES", block)
    monkeypatch.setattr(depthwise, "EVAL_BLOCK_BYTES", block)
    assert compare(5, 8, 9, stride=2) < 1e-12
    assert compare(5, 8, 9, train=False) < 1e-12


def test_eval_forward_then_backward_and_no_dx():
    assert compare(3, 8, 8, train=False) < 1e-12
    assert compare(3, 8, 8, need_dx=False, stride=2) < 1e-12


def test_when_the_algorithm_is_chosen():
    """'auto' runs depthwise convs with one output channel per input channel by direct tap sums;
    a channel multiplier, other grouped convs and a forced im2col run the grouped GEMM."""
    assert conv(4, 8, 8)[0].algorithms() == {"conv2d": "depthwise"}
    assert conv(4, 8, 8, PlanOptions(conv="im2col"))[0].algorithms() == {"conv2d": "grouped"}
    for spec in ({"out_channels": 8, "groups": 4}, {"out_channels": 4, "groups": 2}):
        layer = LAYERS["conv2d"].model_validate({"type": "conv2d", "kernel_size": 3, **spec})
        assert layer_plan(layer, (4, 8, 8)).algorithms() == {"conv2d": "grouped"}


@pytest.mark.parametrize("part", ["backward", "images"])
def test_a_broken_algorithm_is_caught(part, monkeypatch):
    """Negative controls: dx 1% off, or one phase image's pixels shifted by a row (y, dW and dx
    wrong)."""
    if part == "backward":
        real = depthwise.Depthwise.backward

        def wrong(self, *args, **kwargs):
            dx = real(self, *args, **kwargs)
            return None if dx is None else dx * 1.01

        monkeypatch.setattr(depthwise.Depthwise, "backward", wrong)
    else:
        real_copy = depthwise.copy_pixels
        monkeypatch.setattr(depthwise, "copy_pixels",
                            lambda dst, src: real_copy(dst, np.roll(src, 1, axis=1)))
    assert compare(4, 8, 8, stride=2) > 1e-3


NET = """
name: dw-net
seed: 0
input: {shape: [1, 28, 28]}
layers:
  - {type: conv2d, name: conv1, out_channels: 6, kernel_size: 3, stride: 2, padding: 1}
  - {type: relu6}
  - {type: conv2d, name: dw1, out_channels: 6, kernel_size: 3, stride: 2, padding: 1, groups: 6}
  - {type: conv2d, name: pw1, out_channels: 8, kernel_size: 1}
  - {type: conv2d, name: dw2, out_channels: 8, kernel_size: 3, padding: 1, groups: 8}
  - {type: global_avgpool}
  - {type: linear, name: fc, out_features: 10}
gradcheck: {batch_size: 2}
"""


@pytest.mark.parametrize("broken", [False, True])
def test_gradcheck_through_the_depthwise_path(broken, monkeypatch):
    if broken:  # negative control: dw2's dW 1% off
        real = depthwise.Depthwise.backward

        def wrong(self, dy, need_dx=True):
            dx = real(self, dy, need_dx)
            if self.g.c == 8:
                self.gW *= 1.01
            return dx

        monkeypatch.setattr(depthwise.Depthwise, "backward", wrong)
    spec = netspec.loads(NET, "dw.yaml")
    assert netspec.compile(spec).algorithms()["dw1"] == "depthwise"
    report = check_spec(spec)
    failed = {(r.layer, r.tensor) for r in report.rows if not r.passed}
    assert failed == ({("dw2", "weight")} if broken else set())
