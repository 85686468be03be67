"""Plan-level fusion: two adjacent layers that run faster as one, computing the same function.
The plan asks `fusions` which pairs fuse, and `build` gives the first layer's step the pair's
closures; the second layer's step passes arrays through (`passthrough`). Every layer keeps its
own step, name and parameters; `plan.outputs` holds the pair's output for both steps, and
`netspec bench` times the pair in the first layer's row. The plan option `fuse`
(netspec/plan/options.py) turns fusion off. Two kinds:

conv2d -> avgpool2d, when the pool tiles the conv's output (stride = kernel, no padding) and
the conv has stride 1 and dilation 1 (LeNet's pairs). Average pooling is linear, so
    pool(conv(x, W) + b) = conv(x, W6, stride (PH, PW)) + b
    W6[o, c, a, e] = 1/(PH*PW) * sum_{p<PH, q<PW} W[o, c, a - p, e - q]   (KH+PH-1, KW+PW-1)
    dW[o, c, i, j] = 1/(PH*PW) * sum_{p<PH, q<PW} dW6[o, c, i + p, j + q]
    db, dx: the strided conv's own (the bias passes through the mean unchanged)
  The rows the pool drops in floor mode are exactly those the strided conv never computes. For
  LeNet (5x5 conv, 2x2 pool) each pair does 36/100 of the multiply-adds on a col 36/100 the size.
  Equal to the two layers up to rounding.

relu -> maxpool2d (VGG-style nets): max and relu commute, maxpool(relu(x)) = relu(maxpool(x)),
so the relu runs on the pooled array, a quarter of the size for 2x2 pools. Exactly equal to the
two layers, gradients included: where the window's maximum is positive both route dy to the
same (first) winner, and where it is not both give 0.
"""

from __future__ import annotations

import numpy as np

from netspec.nn.layers import Ctx
from netspec.nn.layers.base import pair
from netspec.nn.layers.conv2d import Conv2d


def fusions(infos, enabled: bool = True) -> dict[str, str]:
    """{first layer: second layer} for every pair that fuses: the first layer's output is read
    by the second only, which reads nothing else (see the module docstring for the kinds)."""
    if not enabled:
        return {}
    readers: dict[str, list] = {}
    for info in infos:
        for name in info.inputs:
            readers.setdefault(name, []).append(info)
    found = {}
    for info in infos:
        after = readers.get(info.name, [])
        if len(after) == 1 and after[0].inputs == (info.name,) and _kind(info, after[0]):
            found[info.name] = after[0].name
    return found


def _kind(first, second) -> str | None:
    """'conv_avgpool', 'relu_maxpool' or None, for a layer and the one layer reading it."""
    a, b = first.layer, second.layer
    if (first.type, second.type) == ("relu", "maxpool2d"):
        return "relu_maxpool"
    if (first.type, second.type) != ("conv2d", "avgpool2d"):
        return None
    pt, pb, pl, pr = a.pads()
    if (pair(a.stride) != (1, 1) or pair(a.dilation) != (1, 1) or (pt, pl) != (pb, pr)
            or a.groups != 1):
        return None
    if b.torch_stride() != pair(b.kernel_size) or b.pads() != (0, 0, 0, 0):
        return None
    if _strided(a, b).output_shape(first.in_shape) != tuple(second.out_shape):
        return None
    return "conv_avgpool"


def build(first, first_ctx: Ctx, second, second_ctx: Ctx):
    """The first step's (forward, backward) for a fused pair of LayerInfos, from each layer's
    own Ctx."""
    if _kind(first, second) == "relu_maxpool":
        return _relu_maxpool(first.layer.build(first_ctx), second.layer.build(second_ctx))
    return _conv_avgpool(first_ctx, first.layer, second.layer)


def _relu_maxpool(relu, pool):
    """relu(maxpool(x)): the pool on the relu's input, then the relu on the pooled array (each
    layer's own closures, so each keeps its region for the gradient checker)."""
    relu_forward, relu_backward = relu
    pool_forward, pool_backward = pool

    def forward(x, train):
        return relu_forward(pool_forward(x, train), train)

    def backward(dy, need_dx=True):
        return pool_backward(relu_backward(dy, True), need_dx)

    return forward, backward


def _strided(conv: Conv2d, pool) -> Conv2d:
    """The one strided conv that computes pool(conv(x))."""
    (kh, kw), (ph, pw) = pair(conv.kernel_size), pair(pool.kernel_size)
    pt, _, pl, _ = conv.pads()
    return Conv2d(out_channels=conv.out_channels, kernel_size=(kh + ph - 1, kw + pw - 1),
                  stride=(ph, pw), padding=(pt, pl), bias=conv.bias)


def _conv_avgpool(ctx: Ctx, conv: Conv2d, pool):
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
                grads={**ctx.grads, "weight": gW6}, ws=ctx.ws, noise=ctx.noise, conv=ctx.conv,
                blas_threads=ctx.blas_threads)
    conv_forward, conv_backward = _strided(conv, pool).build(inner)
    ctx.algorithm = inner.algorithm

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
    """The second layer's (forward, backward): its work is done in the first layer's step."""
    return (lambda x, train: x), (lambda dy, need_dx=True: dy if need_dx else None)


def describe(infos, fused: dict[str, str]) -> list[str]:
    """One line per fused pair, for the setup log: what runs instead of the two layers."""
    by_name = {info.name: info for info in infos}
    lines = []
    for first, second in fused.items():
        a, b = by_name[first], by_name[second]
        if _kind(a, b) == "relu_maxpool":
            lines.append(f"{first} + {second}: the max pool first, then the relu on the "
                         "pooled array (the same result, smaller)")
            continue
        s = _strided(a.layer, b.layer)
        (kh, kw), (sh, sw) = pair(s.kernel_size), pair(s.stride)
        lines.append(f"{first} + {second}: one {kh}x{kw} convolution with stride "
                     f"{sh}x{sw} (average pooling folded into the weights)")
    return lines
