"""Max pooling routes the gradient of a tied window to the first maximum, exactly as torch.

Ties are the norm, not the exception: after a relu, or over MNIST's constant background, many
windows hold equal maxima. Every code path (the 2x2 tournament, the general scan, padding,
floor mode, backward after an eval forward) must pick the same winner as torch.
"""

import numpy as np
import pytest

from netspec.nn.layers import LAYERS
from netspec.plan.compiler import layer_plan

torch = pytest.importorskip("torch", reason="the tie-breaking reference is torch")

CASES = [
    ({"kernel_size": 2}, (3, 6, 8)),  # tiles the input: the 2x2 tournament
    ({"kernel_size": 2}, (3, 7, 7)),  # floor mode: general scan
    ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 7, 6)),  # overlapping, padded
    ({"kernel_size": [1, 3], "stride": [1, 3]}, (2, 4, 9)),  # tiles, but not 2x2
]


@pytest.mark.parametrize("fields, shape", CASES, ids=[str(c[0]) for c in CASES])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_tied_windows_route_like_torch(fields, shape, train):
    rng = np.random.default_rng(0)
    x = np.maximum(rng.integers(-2, 3, (5, *shape)), 0).astype(np.float64)  # mostly ties
    layer = LAYERS["maxpool2d"](**fields)
    plan = layer_plan(layer, shape, "float64")
    y = plan.forward(x, train=train)
    dy = rng.standard_normal(y.shape)
    dx = plan.backward(dy)

    pool = torch.nn.MaxPool2d(layer.kernel_size, layer.stride or layer.kernel_size,
                              layer.padding)
    xt = torch.tensor(x, requires_grad=True)
    yt = pool(xt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    # a wrong winner is off by a whole dy (~1); overlapping windows that share a winner may
    # only sum their contributions in another order (~1e-16)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-12)
    assert (x == 0).mean() > 0.5  # the input really is full of ties


@pytest.mark.parametrize("fields", [
    {"kernel_size": 3, "stride": 1, "padding": 1},  # GoogLeNet's branch pools: separable
    {"kernel_size": 3, "stride": 2, "ceil_mode": True},  # separable
    {"kernel_size": [3, 2], "stride": [1, 2], "dilation": [2, 1], "padding": [1, 0]},
    {"kernel_size": 2},  # not separable (no fewer passes)
])
def test_eval_maxima_equal_torch_and_the_training_scan(fields):
    """Inference takes the max separably where that is fewer passes: the same values as the
    training scan and as torch, -inf padding and NaN included."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 9, 8))
    x[0, 0, 4, 4] = np.nan
    layer = LAYERS["maxpool2d"](**fields)
    plan = layer_plan(layer, (2, 9, 8), "float64")
    y_eval = plan.forward(x, train=False)
    assert np.array_equal(y_eval, plan.forward(x, train=True), equal_nan=True)
    info = plan.steps[0].info
    ref = layer.torch_module(info, torch.nn)(torch.from_numpy(x)).numpy()
    assert np.array_equal(y_eval, ref, equal_nan=True)
