"""netspec/kernels/col2im.py against a reference sum, tap by tap: with the taps that tile dx
copied (a 'same' conv's centre; taps 1 and 2 of a 3x3 conv with stride 2) and without."""

import numpy as np
import pytest

from netspec.kernels.col2im import col2im, col2im_plan


def reference(dcol, in_hw, out_hw, kernel, stride, dilation, pad):
    """dx[c, o*s + k*d - p, n] += dcol[c, k, o, n] for every tap and output, through a padded
    buffer."""
    c, n = dcol.shape[0], dcol.shape[-1]
    big = np.zeros((c, in_hw[0] + 2 * kernel[0] * dilation[0] + stride[0] * out_hw[0],
                    in_hw[1] + 2 * kernel[1] * dilation[1] + stride[1] * out_hw[1], n))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            for oh in range(out_hw[0]):
                for ow in range(out_hw[1]):
                    r = oh * stride[0] + i * dilation[0] - pad[0]
                    q = ow * stride[1] + j * dilation[1] - pad[1]
                    big[:, r + pad[0], q + pad[1]] += dcol[:, i, j, oh, ow]
    return big[:, pad[0]:pad[0] + in_hw[0], pad[1]:pad[1] + in_hw[1]]


def out_size(size, k, s, d, p):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("hw, kernel, stride, dilation, pad, copies", [
    ((8, 8), (3, 3), (2, 2), (1, 1), (1, 1), 4),     # ResNet's downsampling conv
    ((9, 7), (3, 3), (2, 2), (1, 1), (1, 1), 4),     # odd sizes
    ((6, 6), (3, 3), (1, 1), (1, 1), (1, 1), 1),     # 'same': the centre
    ((12, 12), (7, 7), (2, 2), (1, 1), (3, 3), 4),   # a 7x7 stem
    ((8, 8), (1, 1), (2, 2), (1, 1), (0, 0), 0),     # a strided projection reads every other
    ((10, 9), (6, 6), (2, 2), (1, 1), (0, 0), 0),    # LeNet's fused conv + pool: a gap
    ((9, 9), (3, 3), (1, 1), (2, 2), (2, 2), 1),     # dilated 'same'
    ((7, 8), (2, 3), (3, 1), (1, 1), (0, 1), 0),
])
def test_col2im_equals_the_tap_by_tap_sum(hw, kernel, stride, dilation, pad, copies):
    oh, ow = (out_size(hw[a], kernel[a], stride[a], dilation[a], pad[a]) for a in (0, 1))
    plan = col2im_plan(hw, (oh, ow), kernel, stride, dilation, pad)
    assert len(plan[0]) == copies
    dcol = np.random.default_rng(0).standard_normal((3, *kernel, oh, ow, 2))
    dx = np.full((3, *hw, 2), np.nan)  # whatever dx held before is overwritten
    col2im(dx, dcol, plan)
    np.testing.assert_allclose(dx, reference(dcol, hw, (oh, ow), kernel, stride, dilation, pad),
                               rtol=1e-12, atol=1e-12)


def test_a_wrong_tiling_is_caught():
    """Negative control: treating a tap that does not tile dx as a copy loses the other taps'
    sums there."""
    hw, kernel, stride, pad = (8, 8), (3, 3), (2, 2), (1, 1)
    copies, adds = col2im_plan(hw, (4, 4), kernel, stride, (1, 1), pad)
    wrong = (copies + [t for t in adds if (t[0], t[1]) == (0, 0)],
             [t for t in adds if (t[0], t[1]) != (0, 0)])
    dcol = np.random.default_rng(1).standard_normal((2, *kernel, 4, 4, 1))
    dx = np.empty((2, *hw, 1))
    col2im(dx, dcol, wrong)
    assert not np.allclose(dx, reference(dcol, hw, (4, 4), kernel, stride, (1, 1), pad))
