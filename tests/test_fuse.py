"""Fused layer pairs (netspec/plan/fuse.py): a conv2d followed by an average pool that tiles its
output runs as one strided convolution, and a relu followed by a max pool runs the pool first.
Which pairs fuse, that each fused pair equals the two layers (forward, dx and every gradient, in
training and in eval; relu + maxpool bit for bit), and that the gradients check, with a broken
backward of each kind as the negative control."""

import numpy as np
import pytest

import netspec
from netspec.plan import fuse
from netspec.plan.gradcheck import check_spec

NET = """\
name: fuse
input: {{shape: {shape}}}
layers:
  - {{type: conv2d, name: conv, out_channels: 3, {conv}}}
  - {{type: avgpool2d, name: pool, {pool}}}
  - {{type: relu}}
  - {{type: flatten}}
  - {{type: linear, name: fc, out_features: 4}}
loss: {{type: cross_entropy}}
data: {{dataset: custom-dir, num_classes: 4}}
"""


def spec_of(shape="[2, 10, 10]", conv="kernel_size: 3", pool="kernel_size: 2", net=NET):
    return netspec.loads(net.format(shape=shape, conv=conv, pool=pool), "fuse.yaml")


def run(spec, fused, train=True):
    """(plan, y, dx, grads) of one forward and backward in float64, fused or not."""
    plan = netspec.compile(spec, "float64", netspec.PlanOptions(fuse=fused))
    for name, p in plan.params.items():  # biases off zero, so that a wrong bias path shows
        if name.endswith("bias"):
            p[...] = np.linspace(-1, 1, p.size)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, *spec.input.shape))
    y = plan.forward(x, train)
    dx = plan.backward(rng.standard_normal(y.shape))
    return plan, y, dx, {k: g.copy() for k, g in plan.grads.items()}


@pytest.mark.parametrize("shape, conv, pool", [
    ("[1, 12, 12]", "kernel_size: 5, padding: 2", "kernel_size: 2"),  # LeNet's conv1
    ("[3, 11, 11]", "kernel_size: 3", "kernel_size: 2"),  # 9x9 conv: floor mode drops a row
    ("[2, 10, 9]", "kernel_size: 3, padding: 1, bias: false", "kernel_size: [2, 3]"),
    ("[2, 8, 8]", "kernel_size: 1", "kernel_size: 2, stride: 2"),
    ("[2, 9, 9]", "kernel_size: 3, padding: same", "kernel_size: 3"),
    ("[2, 10, 10]", "kernel_size: [3, 2], padding: [1, 0]", "kernel_size: 2"),
])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_the_fused_pair_equals_the_two_layers(shape, conv, pool, train):
    spec = spec_of(shape, conv, pool)
    plan, y, dx, grads = run(spec, True, train)
    assert plan.fused == {"conv": "pool"}
    ref, y0, dx0, grads0 = run(spec, False, train)
    assert ref.fused == {}
    assert np.abs(y - y0).max() < 1e-12 * np.abs(y0).max()
    assert np.abs(dx - dx0).max() < 1e-12 * np.abs(dx0).max()
    for key, g0 in grads0.items():
        assert np.abs(grads[key] - g0).max() <= 1e-12 * np.abs(g0).max(), key


GRAPH = NET.replace("  - {{type: relu}}",
                    "  - {{type: relu, name: r}}\n"
                    "  - {{type: conv2d, name: side, out_channels: 3, kernel_size: 2, "
                    "stride: 2, inputs: [conv]}}\n"
                    "  - {{type: add, inputs: [r, side]}}")


@pytest.mark.parametrize("conv, pool, net", [
    pytest.param("kernel_size: 3", "kernel_size: 2, stride: 1", NET, id="overlapping-pool"),
    pytest.param("kernel_size: 3", "kernel_size: 2, padding: 1", NET, id="padded-pool"),
    pytest.param("kernel_size: 3, stride: 2", "kernel_size: 2", NET, id="strided-conv"),
    pytest.param("kernel_size: 3, dilation: 2", "kernel_size: 2", NET, id="dilated-conv"),
    pytest.param("kernel_size: 4, padding: same", "kernel_size: 2", NET,  # 1 before, 2 after
                 id="uneven-padding"),
    pytest.param("kernel_size: 3, padding: 1", "kernel_size: 2", GRAPH, id="two-readers"),
    pytest.param("kernel_size: 3", "kernel_size: 2", NET.replace("avgpool2d", "maxpool2d"),
                 id="conv-maxpool"),
    pytest.param("kernel_size: 3", "kernel_size: 2", NET.replace(
        "  - {{type: avgpool2d", "  - {{type: relu, name: r0}}\n  - {{type: avgpool2d"),
        id="relu-between"),
])
def test_pairs_that_do_not_fuse_run_as_two_layers(conv, pool, net):
    spec = spec_of("[2, 10, 10]", conv, pool, net)
    plan, y, dx, _ = run(spec, True)
    assert plan.fused == {}
    _, y0, dx0, _ = run(spec, False)
    assert np.array_equal(y, y0) and np.array_equal(dx, dx0)


def test_lenet_fuses_both_pairs_and_says_so():
    spec = netspec.load("specs/lenet.yaml")
    plan = netspec.compile(spec)
    assert plan.fused == {"conv1": "avgpool2d1", "conv2": "avgpool2d4"}
    tail = ": one 6x6 convolution with stride 2x2 (average pooling folded into the weights)"
    assert fuse.describe(spec.infos, plan.fused) == [
        "conv1 + avgpool2d1" + tail, "conv2 + avgpool2d4" + tail]


@pytest.mark.parametrize("broken", [False, True])
def test_gradcheck_through_the_fused_pair(broken, monkeypatch):
    if broken:  # negative control: dW folds all but the last of the pool's shifts
        right = fuse.fold
        monkeypatch.setattr(fuse, "fold", lambda gW, gW6, shifts, scale:
                            right(gW, gW6, shifts[:-1], scale))
    report = check_spec(spec_of("[1, 12, 12]", "kernel_size: 5, padding: 2", "kernel_size: 2"))
    failed = {(r.layer, r.tensor) for r in report.rows if not r.passed}
    if broken:  # only the fused conv's weight gradient is wrong
        assert ("conv", "weight") in failed and ("conv", "bias") not in failed
        assert ("fc", "weight") not in failed and ("input", "input") not in failed
    else:
        assert failed == set()


RELU_POOL = """\
name: relu-pool
input: {{shape: [2, 9, 9]}}
layers:
  - {{type: conv2d, name: conv, out_channels: 3, kernel_size: 3, padding: 1}}
  - {{type: batchnorm, name: bn}}
  - {{type: relu, name: act}}
  - {{type: maxpool2d, name: pool, {pool}}}
  - {{type: flatten}}
  - {{type: linear, name: fc, out_features: 4}}
loss: {{type: cross_entropy}}
data: {{dataset: custom-dir, num_classes: 4}}
"""


@pytest.mark.parametrize("pool", ["kernel_size: 2", "kernel_size: 3, stride: 2, padding: 1",
                                  "kernel_size: 2, stride: 1", "kernel_size: [2, 3]"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_relu_then_maxpool_equals_the_two_layers_exactly(pool, train):
    spec = netspec.loads(RELU_POOL.format(pool=pool), "relu-pool.yaml")
    plan, y, dx, grads = run(spec, True, train)
    assert plan.fused == {"act": "pool"}
    ref, y0, dx0, grads0 = run(spec, False, train)
    assert np.array_equal(y, y0) and np.array_equal(dx, dx0)
    assert all(np.array_equal(grads[k], g0) for k, g0 in grads0.items())
    # fused, the relu ran on the pooled array: its step holds the pool's output (the same
    # array as the pool step's); unfused it holds the full-size activation
    pooled = {i.name: i.out_shape for i in spec.infos}["pool"]
    assert plan.outputs[2].shape[:-1] == pooled and plan.outputs[2] is plan.outputs[3]
    assert ref.outputs[2].shape[:-1] == (3, 9, 9) != pooled


def test_a_relu_read_twice_does_not_fuse():
    text = RELU_POOL.format(pool="kernel_size: 2").replace(
        "  - {type: flatten}",
        "  - {type: maxpool2d, name: again, kernel_size: 2, inputs: [act]}\n"
        "  - {type: add, inputs: [pool, again]}\n  - {type: flatten}")
    spec = netspec.loads(text, "relu-pool.yaml")
    assert run(spec, True)[0].fused == {}


@pytest.mark.parametrize("broken", [False, True])
def test_gradcheck_through_relu_then_maxpool(broken, monkeypatch):
    if broken:  # negative control: the relu's backward is left out (dy passes the pool as is)
        def no_relu(relu, pool):
            (relu_forward, _), (pool_forward, pool_backward) = relu, pool
            return (lambda x, train: relu_forward(pool_forward(x, train), train),
                    lambda dy, need_dx=True: pool_backward(dy, need_dx))
        monkeypatch.setattr(fuse, "_relu_maxpool", no_relu)
    spec = netspec.loads(RELU_POOL.format(pool="kernel_size: 2"), "relu-pool.yaml")
    report = check_spec(spec)
    failed = {(r.layer, r.tensor) for r in report.rows if not r.passed}
    if broken:  # everything upstream of the pair is wrong, fc downstream is right
        assert ("conv", "weight") in failed and ("fc", "weight") not in failed
    else:
        assert failed == set()
