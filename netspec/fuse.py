"""Plan-level fusion: a conv2d followed by an average pool that tiles its output runs as one
strided convolution (LeNet's conv -> avgpool pairs). The plan asks `fusions` which pairs fuse
and builds them with `build_conv_avgpool`; every layer keeps its own step, name and parameters.

Average pooling is linear, so for a conv with stride 1 and a PH x PW pool with stride = kernel:

    pool(conv(x, W) + b) = conv(x, W6, stride (PH, PW)) + b
    W6[o, c, a, e] = 1/(PH*PW) * sum_{p<PH, q<PW} W[o, c, a - p, e - q]   (KH+PH-1, KW+PW-1)
    dW[o, c, i, j] = 1/(PH*PW) * sum_{p<PH, q<PW} dW6[o, c, i + p, j + q]
    db, dx: the strided conv's own (the bias passes through the mean unchanged)

The output rows the pool drops in floor mode are exactly those the strided conv never computes.
For LeNet (5x5 conv, 2x2 pool) each pair does 36/100 of the multiply-accumulates on a col 36/100
the size, and one worker's training step took 1.0 ms instead of 2.3 (`netspec bench`; numbers
in benchmarks/README.md). The result equals the unfused pair up to rounding.

The conv's step computes the pooled output; the pool's step passes arrays through unchanged
(so `plan.outputs` holds the pooled array for both, and `netspec bench` times the pair in the
conv's row). Set FUSE = False to build every layer on its own.
"""

from __future__ import annotations

import numpy as np

from netspec.layers import Ctx
from netspec.layers.base import pair
from netspec.layers.conv2d import Conv2d

FUSE = True


def fusions(infos) -> dict[str, str]:
    """{conv name: pool name} for every conv2d whose output only an average pool that tiles
    it (stride = kernel, no padding) reads, when the conv has stride 1, dilation 1 and the same
    padding on opposite sides."""
    if not FUSE:
        return {}
    readers: dict[str, list] = {}
    for info in infos:
        for name in info.inputs:
            readers.setdefault(name, []).append(info)
    found = {}
    for info in infos:
        after = readers.get(info.name, [])
        if info.type == "conv2d" and len(after) == 1 and _fusible(info, after[0]):
            found[info.name] = after[0].name
    return found


def _fusible(conv, pool) -> bool:
    c, p = conv.layer, pool.layer
    if pool.type != "avgpool2d" or pool.inputs != (conv.name,):
        return False
    pt, pb, pl, pr = c.pads()
    if pair(c.stride) != (1, 1) or pair(c.dilation) != (1, 1) or (pt, pl) != (pb, pr):
        return False
    if p.torch_stride() != pair(p.kernel_size) or pair(p.padding) != (0, 0):
        return False
    return _strided(c, p).output_shape(conv.in_shape) == tuple(pool.out_shape)


def _strided(conv: Conv2d, pool) -> Conv2d:
    """The one strided conv that computes pool(conv(x))."""
    (kh, kw), (ph, pw) = pair(conv.kernel_size), pair(pool.kernel_size)
    pt, _, pl, _ = conv.pads()
    return Conv2d(out_channels=conv.out_channels, kernel_size=(kh + ph - 1, kw + pw - 1),
                  stride=(ph, pw), padding=(pt, pl), bias=conv.bias)


def build_conv_avgpool(ctx: Ctx, conv: Conv2d, pool):
    """The conv's (forward, backward) for the fused pair: (C, H, W, N) -> pooled (O, OH, OW, N).
    ctx is the conv's own (its weight, bias and their gradients)."""
    (kh, kw), (ph, pw) = pair(conv.kernel_size), pair(pool.kernel_size)
    W, gW = ctx.params["weight"], ctx.grads["weight"]  # (O, C, KH, KW)
    o, c = W.shape[:2]
    W6 = np.zeros((o, c, kh + ph - 1, kw + pw - 1), ctx.dtype)  # what the strided conv reads
    gW6 = np.zeros_like(W6)  # where its backward writes dW6
    shifts = [(p, q) for p in range(ph) for q in range(pw)]
    scale = 1.0 / (ph * pw)
    inner = Ctx(ctx.in_shape, params={**ctx.params, "weight": W6},
                grads={**ctx.grads, "weight": gW6}, ws=ctx.ws, noise=ctx.noise)
    conv_forward, conv_backward = _strided(conv, pool).build(inner)

    def forward(x, train):
        W6.fill(0)  # W6 = mean over the pool's shifts of W, placed at each shift
        for p, q in shifts:
            W6[:, :, p:p + kh, q:q + kw] += W
        W6[...] *= scale
        return conv_forward(x, train)

    def backward(dy, need_dx=True):
        dx = conv_backward(dy, need_dx)  # fills gW6 (and the bias gradient)
        fold(gW, gW6, shifts, scale)
        return dx

    return forward, backward


def fold(gW, gW6, shifts, scale) -> None:
    """dW = mean over the pool's shifts (p, q) of dW6's (KH, KW) windows."""
    kh, kw = gW.shape[2:]
    np.copyto(gW, gW6[:, :, :kh, :kw])
    for p, q in shifts[1:]:
        gW += gW6[:, :, p:p + kh, q:q + kw]
    gW *= scale


def passthrough():
    """The absorbed pool's (forward, backward): its work is done in the conv's step."""
    return (lambda x, train: x), (lambda dy, need_dx=True: dy if need_dx else None)


def describe(infos, fused: dict[str, str]) -> list[str]:
    """One line per fused pair, for the setup log: what runs instead of the two layers."""
    by_name = {info.name: info for info in infos}
    lines = []
    for conv_name, pool_name in fused.items():
        conv, pool = by_name[conv_name].layer, by_name[pool_name].layer
        s = _strided(conv, pool)
        (kh, kw), (sh, sw) = pair(s.kernel_size), pair(s.stride)
        lines.append(f"{conv_name} + {pool_name}: one {kh}x{kw} convolution with stride "
                     f"{sh}x{sw} (average pooling folded into the weights)")
    return lines
