"""col2im for conv2d's backward: the sum of every kernel tap's slice of dcol at the inputs it
read, written straight into dx. The taps are planned once from the geometry, when the layer is
built (`col2im_plan`), and applied at every backward (`col2im`). It lives outside
netspec/nn/layers/ (whose modules each register a layer) to keep conv2d.py focused.

Where some taps read disjoint inputs that together cover every input (a 'same' conv's centre
tap; for a 3x3 conv with stride 2 and padding 1, taps 1 and 2 along each axis, which read the
even and the odd inputs), those taps are copied into dx and only the others added: no zero fill,
and a quarter of the adds of a stride-2 conv become copies.
"""

import numpy as np


def col2im_plan(in_hw, out_hw, kernel, stride, dilation, pad_before):
    """(copies, adds) for `col2im`, from the geometry alone (made at build). Output o of tap k
    reads input o*stride + k*dilation - pad: slices are clipped to the input, taps reading only
    padding dropped. copies: the taps that tile dx (see the module docstring), or [] (dx is
    zeroed first); each tap as (i, j, input rows, input cols, output rows, output cols); adds:
    the other taps."""
    axes = [[_tap(k, in_hw[a], out_hw[a], stride[a], dilation[a], pad_before[a])
             for k in range(kernel[a])] for a in (0, 1)]
    rows, cols = axes
    tiling = [_tiling(axis, in_hw[a]) for a, axis in enumerate(axes)]
    taps = [(i, j, rows[i][0], cols[j][0], rows[i][1], cols[j][1])
            for i in range(kernel[0]) for j in range(kernel[1]) if rows[i] and cols[j]]
    if not all(tiling):
        return [], taps
    copies = [t for t in taps if t[0] in tiling[0] and t[1] in tiling[1]]
    return copies, [t for t in taps if t not in copies]


def col2im(dx, dcol, plan) -> None:
    """dx (C, H, W, N) = sum of each tap's slice of dcol (C, KH, KW, OH, OW, N) at the inputs it
    read, straight into dx: no padded buffer, no copy out, and the tiling taps copied instead of
    a zero fill."""
    copies, adds = plan
    if not copies:
        dx.fill(0)
    for i, j, hd, wd, hs, ws in copies:
        np.copyto(dx[:, hd, wd], dcol[:, i, j, hs, ws])
    for i, j, hd, wd, hs, ws in adds:
        dx[:, hd, wd] += dcol[:, i, j, hs, ws]


def _tap(k: int, size: int, out: int, stride: int, dil: int, pad: int):
    """(input slice, output slice) of kernel tap k along one axis, or None when every output of
    the tap reads padding. Output o reads input o*stride + off."""
    off = k * dil - pad
    lo = max(0, -(off // stride))  # first o with o*stride + off >= 0
    hi = min(out, (size - 1 - off) // stride + 1) if size - 1 - off >= 0 else 0
    if hi <= lo:
        return None
    return slice(lo * stride + off, (hi - 1) * stride + off + 1, stride), slice(lo, hi)


def _tiling(taps, size: int) -> set:
    """Taps along one axis whose input slices are disjoint and cover all `size` inputs: the taps
    reading the most inputs first, each taken where it overlaps none already taken; an empty
    set if they leave a gap."""
    reads = {k: set(range(size)[tap[0]]) for k, tap in enumerate(taps) if tap is not None}
    taken, covered = set(), set()
    for k in sorted(reads, key=lambda k: -len(reads[k])):
        if not reads[k] & covered:
            taken.add(k)
            covered |= reads[k]
    return taken if len(covered) == size else set()
