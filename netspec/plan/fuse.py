"""Plan-level fusion: adjacent layers that run faster as one, computing the same function.
The plan asks `fusions` which layers fuse, as links {layer: the next layer it runs with}, whose
chains (`chains`) run in the chain's first step: `build` gives that step the chain's closures,
and the other layers' steps pass arrays through (`passthrough`). Every layer keeps its own step,
name and parameters; `plan.outputs` holds the chain's output for all of its steps, and
`netspec bench` times a chain in its first layer's row. The plan option `fuse`
(netspec/plan/options.py) turns fusion off. Three kinds:

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

conv2d -> batchnorm -> relu, or conv2d -> batchnorm, or conv2d -> relu (ResNet, GoogLeNet): in
eval mode the batchnorm's affine map y * scale + shift (from its running statistics, computed at
every forward) and the relu run on each block of the conv's output right after the block's GEMM,
while it is in cache, instead of as passes of their own over the whole output; the conv's output
buffer holds the result. The same elementwise operations in the same order, so the results equal
the layers' bit for bit.
A relu joins when it is its input's only reader and does not itself fuse with a max pool.
Training runs the layers' own closures one after the other, exactly as unfused; a backward
after an eval-mode forward (rare: the gradient checker's runs train mode) reruns the forward
unfused first, so that each layer holds what its backward reads.
"""

from __future__ import annotations

import numpy as np

from netspec.nn.layers import Ctx
from netspec.nn.layers.base import pair
from netspec.nn.layers.conv2d import Conv2d


def fusions(infos, enabled: bool = True) -> dict[str, str]:
    """{layer: the next layer it runs with} for every link that fuses: the layer's output is read
    by the next layer only, which reads nothing else (see the module docstring for the kinds).
    Links form chains (`chains`); a layer is in at most one."""
    if not enabled:
        return {}
    readers: dict[str, list] = {}
    for info in infos:
        for name in info.inputs:
            readers.setdefault(name, []).append(info)

    def only_reader(info):
        after = readers.get(info.name, [])
        return after[0] if len(after) == 1 and after[0].inputs == (info.name,) else None

    found: dict[str, str] = {}
    for info in infos:
        nxt = only_reader(info)
        if nxt is None or info.name in found or info.name in found.values():
            continue
        kind = _kind(info, nxt)
        if kind in ("conv_avgpool", "relu_maxpool"):
            found[info.name] = nxt.name
        elif kind == "conv_bn":
            found[info.name] = nxt.name
            relu = only_reader(nxt)
            if _joins(relu, only_reader):
                found[nxt.name] = relu.name
        elif kind == "conv_relu" and _joins(nxt, only_reader):
            found[info.name] = nxt.name
    return found


def _joins(relu, only_reader) -> bool:
    """Whether a relu (or None) ends a conv's chain: not when it pairs with a max pool."""
    if relu is None or relu.type != "relu":
        return False
    pool = only_reader(relu)
    return pool is None or _kind(relu, pool) != "relu_maxpool"


def chains(fused: dict[str, str]) -> list[list[str]]:
    """The chains of `fusions`' links, each [first, ..., last], in the links' order."""
    seconds = set(fused.values())
    out = []
    for first in fused:
        if first in seconds:
            continue
        chain = [first]
        while chain[-1] in fused:
            chain.append(fused[chain[-1]])
        out.append(chain)
    return out


def _kind(first, second) -> str | None:
    """'conv_avgpool', 'relu_maxpool', 'conv_bn', 'conv_relu' or None, for a layer and the one
    layer reading it."""
    a, b = first.layer, second.layer
    if (first.type, second.type) == ("relu", "maxpool2d"):
        return "relu_maxpool"
    if (first.type, second.type) == ("conv2d", "batchnorm"):
        return "conv_bn"
    if (first.type, second.type) == ("conv2d", "relu"):
        return "conv_relu"
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


def build(infos, ctxs):
    """The first step's (forward, backward) for a chain of LayerInfos (see `chains`), from each
    layer's own Ctx."""
    kind = _kind(infos[0], infos[1])
    if kind == "relu_maxpool":
        return _relu_maxpool(infos[0].layer.build(ctxs[0]), infos[1].layer.build(ctxs[1]))
    if kind in ("conv_bn", "conv_relu"):
        return _conv_epilogue([info.layer for info in infos], ctxs)
    return _conv_avgpool(ctxs[0], infos[0].layer, infos[1].layer)


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


def _conv_epilogue(layers, ctxs):
    """conv -> batchnorm -> relu, either of the two optional: in eval mode the batchnorm's
    affine and the relu as the conv's epilogue on each output block (netspec/kernels/conv.py);
    in training the layers' own closures one after the other."""
    steps = [layer.build(ctx) for layer, ctx in zip(layers, ctxs)]
    conv_forward = steps[0][0]
    bn = next(((layer, ctx) for layer, ctx in zip(layers, ctxs) if layer.type == "batchnorm"),
              None)
    relu = layers[-1].type == "relu"
    last = {"x": None, "y": None}  # input and output of an eval-mode forward that ran fused

    def unfused(x, train):
        for forward, _ in steps:
            x = forward(x, train)
        return x

    def forward(x, train):
        if train:
            last["x"] = None
            return unfused(x, True)
        if bn is not None:
            scale, shift = bn[0].eval_affine(bn[1])  # (C, 1) each: batchnorm's own factors

        def after(block, c0, c1):  # (c1 - c0, columns) of the conv's output, in place
            if bn is not None:
                np.multiply(block, scale[c0:c1], out=block)  # as batchnorm's eval forward
                block += shift[c0:c1]
            if relu:
                np.clip(block, 0, np.inf, out=block)  # as relu's

        last["x"] = x
        last["y"] = conv_forward(x, False, after)
        return last["y"]

    def backward(dy, need_dx=True):
        redo = last["x"] is not None
        if redo:  # each layer's forward, so that each holds its inputs (the conv's output
            out = unfused(last["x"], False)  # buffer gets the batchnorm's input back)
            last["x"] = None
        for _, step_backward in steps[:0:-1]:
            dy = step_backward(dy, True)
        dx = steps[0][1](dy, need_dx)
        if redo:  # the chain's output, where the plan holds it
            np.copyto(last["y"], out)
        return dx

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
                eval_conv=ctx.eval_conv, blas_threads=ctx.blas_threads)
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
    """A later layer's (forward, backward) in a chain: its work is done in the first layer's
    step."""
    return (lambda x, train: x), (lambda dy, need_dx=True: dy if need_dx else None)


def describe(infos, fused: dict[str, str]) -> list[str]:
    """One line per chain, for the setup log: what runs instead of the layers."""
    by_name = {info.name: info for info in infos}
    lines = []
    for chain in chains(fused):
        a, b = by_name[chain[0]], by_name[chain[1]]
        names = " + ".join(chain)
        kind = _kind(a, b)
        if kind == "relu_maxpool":
            lines.append(f"{names}: the max pool first, then the relu on the pooled array "
                         "(the same result, smaller)")
        elif kind in ("conv_bn", "conv_relu"):
            what = "batchnorm and relu" if len(chain) == 3 else b.type
            lines.append(f"{names}: in eval mode the {what} on each block of the convolution's "
                         "output while it is in cache (the same result)")
        else:
            s = _strided(a.layer, b.layer)
            (kh, kw), (sh, sw) = pair(s.kernel_size), pair(s.stride)
            lines.append(f"{names}: one {kh}x{kw} convolution with stride "
                         f"{sh}x{sw} (average pooling folded into the weights)")
    return lines
