"""conv2d: 2-D cross-correlation, as torch.nn.Conv2d (groups=1). (C, H, W, N) -> (O, OH, OW, N).

im2col + GEMM, with K = C*KH*KW and P = OH*OW*N:
    col[c, kh, kw, oh, ow, n] = xp[c, oh*sh + kh*dh, ow*sw + kw*dw, n]   (a strided view copy)
    y = W.reshape(O, K) @ col.reshape(K, P) + b
    dW = dy col^T,  db = sum(dy),  dcol = W^T dy,  dx = col2im(dcol)

Training keeps the whole col for backward. The GEMMs run in blocks of output rows, which
OpenBLAS runs much faster here (see MAX_BLOCK). Inference needs no col: it copies one block of
output rows at a time into a cache-sized buffer and multiplies each block while it is hot, the
bias folded in as a row of ones (LeNet inference ~1.8x faster than one whole col). (Doing the
same in training and copying the blocks again in backward for dW was a few % faster with one
BLAS thread but ~20% slower for LeNet's conv2 with two, so training keeps col.)

Row-stacked training path (STACKED; stride 1 along H, at least 8 rows C*KW, and images tall
enough that the KH-1 extra padded rows cost at most 10%: the 28x28 3x3 convs of VGG-style
nets). Only the KW taps are copied, and the KH taps become row blocks of one GEMM:
    col3[c, j, h, v, n] = xp[c, h, v*sw + j*dw, n]                  (C*KW, Hp*OW*N), KH x smaller
    ys = Ws @ col3,  Ws[i*O + o, c*KW + j] = W[o, c, i, j]          (KH*O, Hp*OW*N)
    y[o, h] = sum_i ys[i*O + o, h + i*dh]                           (KH - 1 shifted adds)
  backward, with dys[i*O + o, h + i*dh] = dy[o, h] (zero elsewhere), (KH*O, Hp*OW*N):
    dWs = dys col3^T,  dcol3 = Ws^T dys,  dx = col2im along W only (KW strided adds)
For VGG's 16->16 conv at 28x28 this trained ~0.7x the time of im2col in interleaved layer
timings on a loaded 2-core machine; at 14x14 and 7x7 (14-29% extra rows) it was no faster, and
for 1-channel inputs (K = 3) slower, so those keep im2col. Inference keeps the cache-blocked
im2col below, which was as fast or faster in every case measured.

Winograd training path (WINOGRAD; netspec/kernels/winograd.py, whose `suits` holds the rule): F(4x4,
3x3) for 3x3 convs, stride 1, dilation 1, padding 1, >= 8 input channels, images of 7 pixels a
side or more, in training while BLAS runs one thread (netspec.kernels.blas.THREADS: the worker
processes; with two threads the GEMMs win). Tables in benchmarks/README.md. Eval keeps im2col.

col2im is KH*KW strided adds straight into dx (netspec/kernels/col2im.py).
"""

from typing import ClassVar, Literal

import numpy as np
from numpy.lib.stride_tricks import as_strided
from pydantic import PositiveInt, model_validator

from netspec.kernels import winograd
from netspec.kernels.col2im import col2im, col2im_plan
from netspec.nn.init import InitSpec
from netspec.nn.layers.base import ConvPadding, IntPair, Layer, ShapeError, pair, register


@register
class Conv2d(Layer):
    """weight (out_channels, in_channels, kh, kw), bias (out_channels,)."""

    type: Literal["conv2d"] = "conv2d"
    out_channels: PositiveInt
    kernel_size: IntPair
    stride: IntPair = (1, 1)
    padding: ConvPadding = (0, 0)
    dilation: IntPair = (1, 1)
    bias: bool = True
    init: InitSpec | None = None

    examples: ClassVar[list] = [
        ({"out_channels": 2, "kernel_size": 3}, (2, 5, 5)),
        ({"out_channels": 3, "kernel_size": [3, 2], "stride": 2, "padding": 1}, (2, 6, 5)),
        ({"out_channels": 2, "kernel_size": 2, "padding": "same", "dilation": 2}, (1, 5, 4)),
        ({"out_channels": 2, "kernel_size": 3, "bias": False, "padding": [0, 2]}, (3, 4, 4)),
        # tall enough for the row-stacked training path (STACKED)
        ({"out_channels": 2, "kernel_size": 3, "padding": 1}, (3, 20, 20)),
        ({"out_channels": 3, "kernel_size": 3, "stride": [1, 2], "dilation": [1, 2],
          "padding": [1, 2], "bias": False}, (4, 20, 9)),
    ]

    @model_validator(mode="after")
    def _same_needs_stride_one(self):
        if self.padding == "same" and pair(self.stride) != (1, 1):
            raise ValueError("padding 'same' needs stride 1 (as in PyTorch); "
                             "give the padding as numbers instead")
        return self

    def pads(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right); 'same' puts any odd extra pixel at the bottom/right."""
        if self.padding == "valid":
            return 0, 0, 0, 0
        if self.padding == "same":
            (kh, kw), (dh, dw) = pair(self.kernel_size), pair(self.dilation)
            th, tw = dh * (kh - 1), dw * (kw - 1)
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        ph, pw = pair(self.padding)
        return ph, ph, pw, pw

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(f"conv2d expects an image input (C, H, W), got {tuple(in_shape)}; "
                             "set input.shape to [C, H, W]")
        _, h, w = in_shape
        pt, pb, pl, pr = self.pads()
        (kh, kw), (sh, sw) = pair(self.kernel_size), pair(self.stride)
        dh, dw = pair(self.dilation)
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # extent of the dilated kernel
        if h + pt + pb < span_h or w + pl + pr < span_w:
            raise ShapeError(
                f"the {kh}x{kw} kernel (dilation {dh}x{dw}, extent {span_h}x{span_w}) is larger "
                f"than the padded input {h + pt + pb}x{w + pl + pr}; use a smaller kernel_size "
                "or add padding")
        oh = (h + pt + pb - span_h) // sh + 1
        ow = (w + pl + pr - span_w) // sw + 1
        return (self.out_channels, oh, ow)

    def param_shapes(self, in_shape):
        shapes = {"weight": (self.out_channels, in_shape[0], *pair(self.kernel_size))}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def macs(self, in_shape, out_shape):
        kh, kw = pair(self.kernel_size)
        return out_shape[0] * out_shape[1] * out_shape[2] * in_shape[0] * kh * kw

    def torch_module(self, info, nn):
        padding = self.padding if isinstance(self.padding, str) else pair(self.padding)
        return nn.Conv2d(info.in_shape[0], self.out_channels, pair(self.kernel_size),
                         stride=pair(self.stride), padding=padding,
                         dilation=pair(self.dilation), bias=self.bias)

    def build(self, ctx):
        c, h, w = ctx.in_shape
        o, oh, ow = self.output_shape(ctx.in_shape)
        (kh, kw), (sh, sw) = pair(self.kernel_size), pair(self.stride)
        dh, dw = pair(self.dilation)
        pt, pb, pl, pr = self.pads()
        padded = (pt, pb, pl, pr) != (0, 0, 0, 0)
        taps = col2im_plan((h, w), (oh, ow), (kh, kw), (sh, sw), (dh, dw), (pt, pl))
        stacked_taps = col2im_plan((h, w), (h, ow), (1, kw), (1, sw), (1, dw), (0, pl))  # W only
        k = c * kh * kw  # GEMM inner size
        Wm = ctx.params["weight"].reshape(o, k)  # (O, C, KH, KW) -> (O, C*KH*KW), a view
        gWm = ctx.grads["weight"].reshape(o, k)
        b, gb = ctx.params.get("bias"), ctx.grads.get("bias")
        cache = {}

        def windows(xp, n, rows=oh):
            """(C, Hp, Wp, N) -> view (C, KH, KW, rows, OW, N) of every kernel tap's inputs."""
            s = xp.strides
            return as_strided(xp, (c, kh, kw, rows, ow, n),
                              (s[0], dh * s[1], dw * s[2], sh * s[1], sw * s[2], s[3]),
                              writeable=False)

        def fused_blocks(n):
            """(G, rows): blocks of whole output rows whose col fits FUSED_BYTES."""
            g = _row_blocks(oh, ow * n, min(MAX_BLOCK, FUSED_BYTES // (k * ctx.dtype.itemsize)))
            return g, oh // g

        def col_block(n, rows):
            """(K + 1, rows*OW*N) buffer whose last row is ones when there is a bias (the bias
            then rides in the GEMM: [W | b] @ [col; 1]), and a (C, KH, KW, rows, OW, N) view of
            its first K rows for the im2col copy."""
            kb = k + (b is not None)
            buf = ctx.ws("col_block", (kb, rows * ow * n))
            buf[k:] = 1
            return buf, buf[:k].reshape(c, kh, kw, rows, ow, n)

        def pad(x):
            if not padded:
                return x
            xp = ctx.ws("xp", (c, h + pt + pb, w + pl + pr, x.shape[-1]), zero=True)
            xp[:, pt:pt + h, pl:pl + w] = x  # the border stays 0
            return xp

        def row_windows(xp, n, g):
            """windows() of each of g blocks of output rows. as_strided costs more than
            copying a LeNet-sized block, so the views are kept while xp is the same array (a
            workspace buffer from step to step)."""
            if cache.get("windows_of") is not xp or cache.get("windows_key") != (n, g):
                rows = oh // g
                cache["windows"] = [windows(xp[:, i * rows * sh:], n, rows) for i in range(g)]
                cache["windows_of"], cache["windows_key"] = xp, (n, g)
            return cache["windows"]

        def im2col_w(xp, n):
            """xp (C, Hp, Wp, N) -> col3 (C, KW, Hp, OW, N) = xp[c, h, v*sw + j*dw]"""
            s = xp.strides
            col3 = ctx.ws("col3", (c, kw, xp.shape[1], ow, n))
            np.copyto(col3, as_strided(xp, col3.shape, (s[0], dw * s[2], s[1], sw * s[2], s[3]),
                                       writeable=False))
            return col3

        def stacked_forward(x, train):
            """Row-stacked GEMM (see the module docstring): only the KW taps are copied, and
            the KH taps become KH row blocks of one GEMM, added back with a shift of a row."""
            n = x.shape[-1]
            xp = pad(x)
            hp, r = xp.shape[1], ow * n  # padded rows; columns per output row
            col3 = im2col_w(xp, n)
            Ws = ctx.ws("W_stack", (kh * o, c * kw))  # Ws[i*O + o, c*KW + j] = W[o, c, i, j]
            Ws.reshape(kh, o, c, kw)[...] = ctx.params["weight"].transpose(2, 0, 1, 3)
            ys = ctx.ws("y_stack", (kh * o, hp * r))
            gemm_columns(Ws, col3.reshape(c * kw, -1), ys)  # (KH*O, C*KW) @ (C*KW, Hp*OW*N)
            y = ctx.ws("y", (o, oh, ow, n))
            y2, span = y.reshape(o, -1), oh * r  # y[o, h] = sum_i ys[i*O + o, h + i*dh]
            np.add(ys[:o, :span], ys[o:2 * o, dh * r:dh * r + span], out=y2)
            for i in range(2, kh):
                y2 += ys[i * o:(i + 1) * o, i * dh * r:i * dh * r + span]
            if b is not None:
                y2 += b[:, None]
            cache.update(col3=col3, xp=xp)
            return y

        def stacked_backward(dy, need_dx=True):
            n = dy.shape[-1]
            hp = h + pt + pb
            col3 = cache["col3"]
            if col3 is None:  # the forward was in eval mode: copy the taps now
                col3 = im2col_w(cache["xp"], n)
            # dys[i*O + o, h + i*dh] = dy[o, h], zero elsewhere (the zero rows are never written)
            dys = ctx.ws("dy_stack", (kh * o, hp, ow, n), zero=True)
            for i in range(kh):
                dys[i * o:(i + 1) * o, i * dh:i * dh + oh] = dy
            dys2, col2 = dys.reshape(kh * o, -1), col3.reshape(c * kw, -1)
            gWs = ctx.ws("gW_stack", (c * kw, kh * o))  # dWs^T = col3 dys^T, summed over blocks
            gemm_columns_nt(col2, dys2, gWs)
            ctx.grads["weight"][...] = gWs.reshape(c, kw, kh, o).transpose(3, 0, 2, 1)
            if gb is not None:
                np.sum(dy.reshape(o, -1), axis=1, out=gb)
            if not need_dx:
                return None
            Ws = ctx.ws("W_stack", (kh * o, c * kw))  # as in forward (which eval mode skips)
            Ws.reshape(kh, o, c, kw)[...] = ctx.params["weight"].transpose(2, 0, 1, 3)
            dcol3 = ctx.ws("dcol3", (c, kw, hp, ow, n))  # W_stack^T dys: (C*KW, Hp*OW*N)
            gemm_columns(Ws.T, dys2, dcol3.reshape(c * kw, -1))
            # col2im along W only (KW strided adds), on the unpadded rows pt..pt+h-1
            dx = ctx.ws("dx", (c, h, w, n))
            col2im(dx, dcol3[:, None, :, pt:pt + h], stacked_taps)
            return dx

        def forward(x, train):
            n = x.shape[-1]
            xp = pad(x)
            y = ctx.ws("y", (o, oh, ow, n))
            y2 = y.reshape(o, -1)  # (O, OH, OW, N) -> (O, P), P = OH*OW*N
            if train:  # keep the whole col for backward
                col = ctx.ws("col", (c, kh, kw, oh, ow, n))
                g = _row_blocks(oh, ow * n, MAX_BLOCK)
                rows = oh // g
                col3, y3 = blocks(col.reshape(k, -1), g), blocks(y2, g)  # (G, K|O, P/G)
                for i, win in enumerate(row_windows(xp, n, g)):
                    np.copyto(col[:, :, :, i * rows:(i + 1) * rows], win)  # im2col of a block
                    np.matmul(Wm, col3[i], out=y3[i])  # (O, K) @ (K, P/G), while hot
                if b is not None:
                    y2 += b[:, None]
                cache["col"] = col
                return y
            # inference: im2col block by block into one cache-sized buffer, each block
            # multiplied while it is hot: [W | b] @ [col; 1]: (O, K+1) @ (K+1, P/G) -> (O, P/G)
            g, rows = fused_blocks(n)
            buf, taps = col_block(n, rows)
            Wb = Wm
            if b is not None:
                Wb = ctx.ws("W_b", (o, k + 1))
                Wb[:, :k], Wb[:, k] = Wm, b
            y3 = y2.reshape(o, g, -1)  # (O, P) -> (O, G, P/G)
            for i, win in enumerate(row_windows(xp, n, g)):
                np.copyto(taps, win)
                np.matmul(Wb, buf, out=y3[:, i])
            cache.update(col=None, col3=None, xp=xp)
            return y

        def backward(dy, need_dx=True):
            n = dy.shape[-1]
            col = cache["col"]
            if col is None:  # the forward was in eval mode: im2col now
                col = ctx.ws("col", (c, kh, kw, oh, ow, n))
                np.copyto(col, windows(cache["xp"], n))
            g = _row_blocks(oh, ow * n, MAX_BLOCK)
            col3 = blocks(col.reshape(k, -1), g)  # (K, P) -> (G, K, P/G)
            dy2 = dy.reshape(o, -1)  # (O, OH, OW, N) -> (O, P)
            dy3 = blocks(dy2, g)  # (O, P) -> (G, O, P/G)
            # dW^T = col dy^T per block, summed: (G, K, P/G) @ (G, P/G, O) -> (G, K, O).
            # OpenBLAS runs this orientation ~1.7x faster than dy col^T at these shapes.
            part = ctx.ws("gW_blocks", (g, k, o))
            np.matmul(col3, dy3.transpose(0, 2, 1), out=part)
            gWT = ctx.ws("gWT", (k, o))
            np.sum(part, axis=0, out=gWT)
            np.copyto(gWm, gWT.T)
            if gb is not None:
                ones = ctx.ws("ones", (dy2.shape[1],), fill=1)
                np.matmul(dy2, ones, out=gb)  # db = sum over P: (O, P) @ (P,) -> (O,)
            if not need_dx:
                return None
            dcol = ctx.ws("dcol", (c, kh, kw, oh, ow, n))
            # dcol = W^T dy: (K, O) @ (G, O, P/G) -> (G, K, P/G)
            np.matmul(Wm.T, dy3, out=blocks(dcol.reshape(k, -1), g))
            dx = ctx.ws("dx", (c, h, w, n))
            col2im(dx, dcol, taps)  # KH*KW strided adds
            return dx

        hp = h + pt + pb
        train_fwd, train_bwd = forward, backward
        if STACKED and sh == 1 and kh > 1 and c * kw >= 8 and (hp - oh) * 10 <= oh:
            # training only: inference keeps the cache-blocked im2col, which measured faster
            train_fwd, train_bwd = stacked_forward, stacked_backward
        if WINOGRAD and winograd.suits(c, h, w, (kh, kw, sh, sw, dh, dw), (pt, pb, pl, pr)):
            return winograd.training_path(ctx, o, h, w, train_fwd, forward, train_bwd)
        if train_fwd is forward:
            return forward, backward
        return (lambda x, train: (train_fwd if train else forward)(x, train)), train_bwd

    def to_onnx(self, g, x):
        """Conv with explicit pads [top, left, bottom, right] ('same' included: an odd extra
        pixel goes to the bottom/right, as in pads())."""
        pt, pb, pl, pr = self.pads()
        ws = [g.param("weight")] + ([g.param("bias")] if self.bias else [])
        return g.node("Conv", [x, *ws], kernel_shape=list(pair(self.kernel_size)),
                      strides=list(pair(self.stride)), dilations=list(pair(self.dilation)),
                      pads=[pt, pl, pb, pr], group=1)


# Use the row-stacked GEMM for training when it pays (see the module docstring).
STACKED = True
# Train with Winograd F(4x4, 3x3) when it pays (module docstring, winograd.suits).
WINOGRAD = True


def gemm_columns(a, b, out, block=None):
    """out = a @ b, in blocks of columns of b (OpenBLAS is faster on blocks; see MAX_BLOCK)."""
    block = block or MAX_BLOCK
    for i in range(0, b.shape[1], block):
        np.matmul(a, b[:, i:i + block], out=out[:, i:i + block])


def gemm_columns_nt(a, b, out, block=None):
    """out = a @ b^T, summed over blocks of the shared column axis."""
    block = block or MAX_BLOCK
    part = np.empty_like(out)
    out.fill(0)
    for i in range(0, a.shape[1], block):
        np.matmul(a[:, i:i + block], b[:, i:i + block].T, out=part)
        out += part


# The conv GEMMs run over P = OH*OW*N columns in blocks of at most MAX_BLOCK columns. OpenBLAS
# (0.3.31, SkylakeX) falls off a cliff past ~6000 columns when the other sizes are small:
# conv1 of LeNet (6x25 weights, P = 50176 at batch 64) runs 2.5-3x faster in blocks of 3584
# in all three GEMMs, and the small blocks also avoid OpenBLAS thread stalls on a busy machine.
# Wider convs (K >= 144) show no cliff and block sizes there make no measurable difference.
MAX_BLOCK = 4096
# Each block's im2col copy goes into one buffer of at most this size (about the L2 cache), which
# the GEMM then reads from cache (LeNet inference ~1.8x faster than one whole col).
FUSED_BYTES = 1 << 20


def _row_blocks(oh: int, row: int, max_cols: int) -> int:
    """Fewest blocks of whole output rows (a divisor of oh) with at most max_cols columns."""
    for g in range(1, oh + 1):
        if oh % g == 0 and (oh // g) * row <= max_cols:
            return g
    return oh


def blocks(a, g: int):
    """(R, P) -> view (G, R, P/G): G column blocks (whole output rows) as a GEMM batch."""
    return a.reshape(a.shape[0], g, -1).transpose(1, 0, 2)
