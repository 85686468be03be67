"""netspec/kernels/elementwise.py: clamps at zero against a shared zero array give NumPy's
max(x, 0) and min(x, 0) bit for bit, in place or not, and never let a caller write the zeros."""

import numpy as np
import pytest

from netspec.kernels import elementwise

SPECIAL = [0.0, -0.0, 1.5, -2.5, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3e38]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clamp, ufunc", [(elementwise.positive_part, np.maximum),
                                          (elementwise.negative_part, np.minimum)])
def test_same_bits_as_the_scalar_form(dtype, clamp, ufunc):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(1005), SPECIAL]).astype(dtype).reshape(-1, 7)
    want = ufunc(x, 0)
    got = clamp(x, np.empty_like(x))
    assert got.tobytes() == want.tobytes()
    inplace = x.copy()
    assert clamp(inplace, inplace) is inplace
    assert inplace.tobytes() == want.tobytes()
    # a view that is not contiguous (a block of a conv's output rows)
    block = x.T.copy()[:, 1:5]
    assert clamp(block, block).tobytes() == ufunc(x.T[:, 1:5], 0).tobytes()


@pytest.mark.parametrize("shape, view", [
    ((16, 8, 8, 64), lambda a: a),                          # viewed as rows of 4,096
    ((3, 5, 7, 11), lambda a: a),                           # no long row: a zero array
    ((6, 1000), lambda a: a[:, 100:700]),                   # long contiguous rows, strided
    ((64, 512), lambda a: a.T),                             # transposed: a zero array
    ((4, 4096), lambda a: a[::2]),                          # every other row
])
@pytest.mark.parametrize("clamp, ufunc", [(elementwise.positive_part, np.maximum),
                                          (elementwise.negative_part, np.minimum)])
def test_every_layout(shape, view, clamp, ufunc):
    x = view(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    want = ufunc(x, 0)
    out = np.full_like(x, 7.0)
    assert clamp(x, out) is out
    assert out.tobytes() == want.tobytes()
    inplace = x.copy()  # compared as C order, whatever the view's layout
    clamp(inplace, inplace)
    assert inplace.tobytes() == want.tobytes()


def test_the_zeros_grow_and_stay_zero_and_read_only():
    small = elementwise.zeros((3, 4), np.float32)
    big = elementwise.zeros((1000, 3), np.float32)
    assert small.shape == (3, 4) and big.shape == (1000, 3)
    assert not big.any() and not small.any()
    with pytest.raises(ValueError, match="read-only"):
        big[0, 0] = 1
    x = -np.ones((1000, 3), np.float32)
    elementwise.negative_part(x, x)  # writes to out only
    assert not elementwise.zeros((3000,), np.float32).any()
    assert elementwise.zeros((2,), np.float64).dtype == np.float64
