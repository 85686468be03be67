"""col2im for conv2d's backward: the sum of every kernel tap's slice of dcol at the inputs it
read, written straight into dx. The taps are planned once from the geometry, when the layer is
built (`col2im_plan`), and applied at every backward (`col2im`). It lives outside
netspec/nn/layers/ (whose modules each register a layer) to keep conv2d.py focused.
"""

import numpy as np


def col2im_plan(in_hw, out_hw, kernel, stride, dilation, pad_before):
    """(first, adds) for `col2im`, from the geometry alone (made at build). Output o of tap k
    reads input o*stride + k*dilation - pad: slices are clipped to the input, taps reading only
    padding dropped. first: a tap (i, j) covering all of dx (a 'same' conv's centre), or None;
    adds: (i, j, input rows, input cols, output rows, output cols) per other tap."""
    rows = [_tap(i, in_hw[0], out_hw[0], stride[0], dilation[0], pad_before[0])
            for i in range(kernel[0])]
    cols = [_tap(j, in_hw[1], out_hw[1], stride[1], dilation[1], pad_before[1])
            for j in range(kernel[1])]
    taps = [(i, j) for i in range(kernel[0]) for j in range(kernel[1]) if rows[i] and cols[j]]
    first = next(((i, j) for i, j in taps if rows[i][2] and cols[j][2]), None)
    adds = [(i, j, rows[i][0], cols[j][0], rows[i][1], cols[j][1])
            for i, j in taps if (i, j) != first]
    return first, adds


def col2im(dx, dcol, plan) -> None:
    """dx (C, H, W, N) = sum of each tap's slice of dcol (C, KH, KW, OH, OW, N) at the inputs it
    read, straight into dx: no padded buffer, no copy out, and `first` copied instead of a zero
    fill."""
    first, adds = plan
    if first is None:
        dx.fill(0)
    else:
        np.copyto(dx, dcol[:, first[0], first[1]])
    for i, j, hd, wd, hs, ws in adds:
        dx[:, hd, wd] += dcol[:, i, j, hs, ws]


def _tap(k: int, size: int, out: int, stride: int, dil: int, pad: int):
    """(input slice, output slice, covers all of both) of kernel tap k along one axis, or None
    when every output of the tap reads padding. Output o reads input o*stride + off."""
    off = k * dil - pad
    lo = max(0, -(off // stride))  # first o with o*stride + off >= 0
    hi = min(out, (size - 1 - off) // stride + 1) if size - 1 - off >= 0 else 0
    if hi <= lo:
        return None
    whole = stride == 1 and lo == 0 and hi == out and off == 0 and out == size
    return slice(lo * stride + off, (hi - 1) * stride + off + 1, stride), slice(lo, hi), whole
