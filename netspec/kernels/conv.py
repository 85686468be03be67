"""conv2d's algorithms, one small object each, and the rule that chooses among them.

Every algorithm computes the same 2-D cross-correlation on the batch-innermost layout,
x (C, H, W, N) -> y (O, OH, OW, N), with weight (O, C, KH, KW) and bias (O,), and owns the
tensors its backward needs:

    algo = Im2col(geometry, params, grads, ws)
    y = algo.forward(x, train)        # y belongs to the layer's workspace
    dx = algo.backward(dy, need_dx)   # fills grads["weight"] (and "bias"); dx or None

An eval-mode forward may take an epilogue, `algo.forward(x, False, after)`: after(block, c0, c1)
updates in place a block (c1 - c0, columns) of y's channels c0..c1, bias included, while it is
still in cache (netspec/plan/fuse.py applies a following batchnorm and relu this way).

- `Im2col`: K = C*KH*KW, P = OH*OW*N.
      col[c, kh, kw, oh, ow, n] = xp[c, oh*sh + kh*dh, ow*sw + kw*dw, n]   (a strided view copy)
      y = W.reshape(O, K) @ col.reshape(K, P) + b
      dW = dy col^T,  db = sum(dy),  dcol = W^T dy,  dx = col2im(dcol)
  Training keeps the whole col for backward; GEMMs run in blocks of output rows (MAX_BLOCK).
  A strided conv with padding copies its training col tap by tap from x itself (no padded copy
  of x), the entries that read padding left at zero.
  Inference needs no col: it copies one block of output rows at a time into a cache-sized
  buffer (FUSED_BYTES) and multiplies it while it is hot, the bias riding as a row of ones.
  A 1x1 conv with stride 1 and no padding copies nothing: on the batch-innermost layout x is
  already its col, (C, H*W*N), and inference is W @ x in blocks of columns.
- `RowStacked` (training; netspec/kernels/stacked.py): the KH taps as row blocks of one GEMM.
- `WinogradF4` (training): F(4x4, 3x3), netspec/kernels/winograd.py.
- `Grouped` (netspec/kernels/grouped.py) and `Depthwise` (netspec/kernels/depthwise.py):
  convs with groups > 1.

An eval-mode forward runs `Im2col`'s cache-blocked inference, or with the plan option
eval_conv 'auto' Winograd where `eval_winograd` and `winograd.pays_at_inference` say it pays; a
backward after it (the gradient checker's) recomputes what it needs. `choose` and
`eval_winograd` hold every rule in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from netspec.kernels import winograd
from netspec.kernels.col2im import col2im, col2im_plan

# The conv GEMMs run over P = OH*OW*N columns in blocks of at most MAX_BLOCK columns: OpenBLAS
# slows down sharply on wider blocks when the other GEMM sizes are small (LeNet's first conv),
# and small blocks avoid its thread stalls on a busy machine (docs/performance.md).
MAX_BLOCK = 4096
# Inference copies each block's im2col into one buffer of at most this size (about the L2
# cache), which the GEMM then reads from cache.
FUSED_BYTES = 1 << 20
# RowStacked computes KH-1 extra rows of the padded image; it pays while they are at most this
# share of the output rows and the stacked GEMM has at least MIN_STACKED_ROWS rows C*KW (a
# 3x3 conv of 64 samples of 32x32, forward + backward: 3 channels 2.3 ms against im2col's 3.6,
# 8 channels even with one BLAS thread and 11% slower with two, 16 channels 9-16% faster).
STACKED_EXTRA_ROWS = 0.1
MIN_STACKED_ROWS = 32


@dataclass(frozen=True)
class Geometry:
    """One conv2d's shapes: input (C, H, W), output (O, OH, OW), kernel, stride, dilation and
    padding (top, bottom, left, right)."""

    c: int
    h: int
    w: int
    o: int
    oh: int
    ow: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]
    groups: int = 1

    @property
    def k(self) -> int:
        """GEMM inner size C*KH*KW (per group: C/groups * KH*KW)."""
        return self.c // self.groups * self.kernel[0] * self.kernel[1]


def choose(g: Geometry, request: str = "auto", blas_threads: int = 1) -> str:
    """The training algorithm of a conv: `request` where it can run, else by rule ('auto'):
    Winograd where `winograd.suits` the geometry and each process runs one BLAS thread (its
    36 small GEMMs per row of tiles gain nothing from more threads, while im2col's big GEMMs
    do); else RowStacked where it suits; else im2col. Grouped convs run 'grouped' (im2col and a
    batched GEMM), except that under 'auto' a depthwise conv with one output channel per input
    channel runs 'depthwise' (direct tap sums, no im2col)."""
    if g.groups > 1:
        depthwise = g.groups == g.c == g.o
        return "depthwise" if depthwise and request == "auto" else "grouped"
    fits = {"winograd": winograd.suits(g.c, g.h, g.w, (*g.kernel, *g.stride, *g.dilation),
                                       g.pads),
            "stacked": _stacked_suits(g), "im2col": True}
    if request != "auto":
        return request if fits[request] else "im2col"
    if fits["winograd"] and blas_threads == 1:
        return "winograd"
    return "stacked" if fits["stacked"] else "im2col"


def eval_winograd(g: Geometry, request: str = "im2col", blas_threads: int = 1) -> bool:
    """Whether inference may take Winograd (plan option eval_conv 'auto'): where it suits the
    geometry and each process runs one BLAS thread, as in training; per forward it then runs
    where `winograd.pays_at_inference` for the batch (else im2col's inference)."""
    return (request == "auto" and blas_threads == 1 and g.groups == 1
            and winograd.suits(g.c, g.h, g.w, (*g.kernel, *g.stride, *g.dilation), g.pads))


def _stacked_suits(g: Geometry) -> bool:
    """Stride 1 along H, a kernel taller than one row, enough rows C*KW, and an image tall
    enough that the KH-1 extra padded rows cost at most STACKED_EXTRA_ROWS of the work."""
    hp = g.h + g.pads[0] + g.pads[1]
    return (g.stride[0] == 1 and g.kernel[0] > 1 and g.c * g.kernel[1] >= MIN_STACKED_ROWS
            and hp - g.oh <= STACKED_EXTRA_ROWS * g.oh)


class Algorithm:
    """What every conv algorithm shares: the geometry, the parameter views, the workspace, and
    padding into a workspace buffer whose border stays zero."""

    name = ""

    def __init__(self, g: Geometry, params: dict, grads: dict, ws):
        self.g, self.ws = g, ws
        self.W, self.b = params["weight"], params.get("bias")  # (O, C, KH, KW), (O,)
        self.gW, self.gb = grads["weight"], grads.get("bias")

    def pad(self, x):
        """x (C, H, W, N) -> xp (C, Hp, Wp, N)."""
        g = self.g
        pt, pb, pl, pr = g.pads
        if not any(g.pads):
            return x
        xp = self.ws("xp", (g.c, g.h + pt + pb, g.w + pl + pr, x.shape[-1]), zero=True)
        xp[:, pt:pt + g.h, pl:pl + g.w] = x  # the border stays 0
        return xp

    def finish(self, y, after):
        """Apply an eval-mode epilogue to all of y (algorithms without blocks of their own)."""
        if after is not None:
            after(y.reshape(self.g.o, -1), 0, self.g.o)
        return y

    def bias_grad(self, dy) -> None:
        """db = sum of dy over (OH, OW, N): (O, P) @ ones (P,)."""
        if self.gb is not None:
            dy2 = dy.reshape(self.g.o, -1)
            np.matmul(dy2, self.ws("ones", (dy2.shape[1],), fill=1), out=self.gb)


class Im2col(Algorithm):
    """GEMMs over im2col, blocked by output rows (see the module docstring)."""

    name = "im2col"

    def __init__(self, g, params, grads, ws):
        super().__init__(g, params, grads, ws)
        self.taps = col2im_plan((g.h, g.w), (g.oh, g.ow), g.kernel, g.stride, g.dilation,
                                (g.pads[0], g.pads[2]))
        self.Wm = self.W.reshape(g.o, g.k)  # (O, C, KH, KW) -> (O, K), a view
        self.gWm = self.gW.reshape(g.o, g.k)
        self.col = None  # the last training forward's col; None after an eval forward
        self.xp = None  # the last forward's padded input
        self._views = (None, None, None)  # (xp, key, row-block window views)
        self.pointwise = (g.kernel == (1, 1) and g.stride == (1, 1) and not any(g.pads)
                          and g.groups == 1)  # x is its own col
        # A strided, padded conv's training col is copied tap by tap from x (see `forward`)
        self.tapwise = max(g.stride) > 1 and any(g.pads)

    def windows(self, xp, n: int, rows: int | None = None):
        """(C, Hp, Wp, N) -> view (C, KH, KW, rows, OW, N) of every kernel tap's inputs."""
        g = self.g
        (kh, kw), (sh, sw), (dh, dw) = g.kernel, g.stride, g.dilation
        s = xp.strides
        return as_strided(xp, (g.c, kh, kw, rows or g.oh, g.ow, n),
                          (s[0], dh * s[1], dw * s[2], sh * s[1], sw * s[2], s[3]),
                          writeable=False)

    def row_windows(self, xp, n: int, blocks: int):
        """windows() of each of `blocks` blocks of output rows. as_strided costs more than
        copying a LeNet-sized block, so the views are kept while xp is the same array (a
        workspace buffer from step to step)."""
        of, key, views = self._views
        if of is not xp or key != (n, blocks):
            rows, sh = self.g.oh // blocks, self.g.stride[0]
            views = [self.windows(xp[:, i * rows * sh:], n, rows) for i in range(blocks)]
            self._views = (xp, (n, blocks), views)
        return views

    def forward(self, x, train, after=None):
        g, n = self.g, x.shape[-1]
        y = self.ws("y", (g.o, g.oh, g.ow, n))
        y2 = y.reshape(g.o, -1)  # (O, OH, OW, N) -> (O, P), P = OH*OW*N
        if not train:
            self.col = None
            xp = self.xp = self.pad(x)
            if self.pointwise:
                return self._pointwise(x.reshape(g.c, -1), y2, y, after)
            return self._infer(xp, n, y2, y, after)
        blocks_ = row_blocks(g.oh, g.ow * n, MAX_BLOCK)
        rows = g.oh // blocks_
        if self.tapwise:  # no padded copy of x: each tap's window inside x, copied straight;
            # the entries of taps reading padding are zeros that nothing writes (16-32 ->
            # 32-64 channels, stride 2, 64 samples: 0.84-0.90 of the forward's time)
            self.xp = None
            col = self.col = self.ws("col", (g.c, *g.kernel, g.oh, g.ow, n), zero=True)
            for i, j, hd, wd, hs, ws in (*self.taps[0], *self.taps[1]):
                np.copyto(col[:, i, j, hs, ws], x[:, hd, wd])
            windows = None
        else:
            xp = self.xp = self.pad(x)
            col = self.col = self.ws("col", (g.c, *g.kernel, g.oh, g.ow, n))  # for backward
            windows = self.row_windows(xp, n, blocks_)
        col3, y3 = blocks(col.reshape(g.k, -1), blocks_), blocks(y2, blocks_)  # (G, K|O, P/G)
        for i in range(blocks_):
            if windows is not None:
                np.copyto(col[:, :, :, i * rows:(i + 1) * rows], windows[i])  # a block's col
            np.matmul(self.Wm, col3[i], out=y3[i])  # (O, K) @ (K, P/G), while hot
        if self.b is not None:
            y2 += self.b[:, None]
        return y

    def _pointwise(self, x2, y2, y, after):
        """Inference of a 1x1 conv, stride 1, no padding: y = W @ x (+ b), (O, C) @ (C, P), in
        blocks of MAX_BLOCK columns, with no copy of x."""
        o = self.g.o
        for i in range(0, x2.shape[1], MAX_BLOCK):
            block = y2[:, i:i + MAX_BLOCK]
            np.matmul(self.Wm, x2[:, i:i + MAX_BLOCK], out=block)
            if self.b is not None:
                block += self.b[:, None]
            if after is not None:
                after(block, 0, o)
        return y

    def _infer(self, xp, n, y2, y, after=None):
        """im2col block by block into one cache-sized buffer, each block multiplied while it is
        hot: [W | b] @ [col; 1]: (O, K+1) @ (K+1, P/G) -> (O, P/G)."""
        g, ws = self.g, self.ws
        nblocks = row_blocks(g.oh, g.ow * n,
                             min(MAX_BLOCK, FUSED_BYTES // (g.k * ws.dtype.itemsize)))
        rows = g.oh // nblocks
        kb = g.k + (self.b is not None)
        buf = ws("col_block", (kb, rows * g.ow * n))  # its last row is ones with a bias
        buf[g.k:] = 1
        taps = buf[:g.k].reshape(g.c, *g.kernel, rows, g.ow, n)
        Wb = self.Wm
        if self.b is not None:
            Wb = ws("W_b", (g.o, g.k + 1))
            Wb[:, :g.k], Wb[:, g.k] = self.Wm, self.b
        y3 = y2.reshape(g.o, nblocks, -1)  # (O, P) -> (O, G, P/G)
        for i, win in enumerate(self.row_windows(xp, n, nblocks)):
            np.copyto(taps, win)
            np.matmul(Wb, buf, out=y3[:, i])
            if after is not None:
                after(y3[:, i], 0, g.o)
        return y

    def backward(self, dy, need_dx=True):
        g, n = self.g, dy.shape[-1]
        col = self.col
        if col is None:  # the forward was in eval mode: im2col now
            col = self.ws("col", (g.c, *g.kernel, g.oh, g.ow, n))
            np.copyto(col, self.windows(self.xp, n))
        nblocks = row_blocks(g.oh, g.ow * n, MAX_BLOCK)
        col3 = blocks(col.reshape(g.k, -1), nblocks)  # (K, P) -> (G, K, P/G)
        dy3 = blocks(dy.reshape(g.o, -1), nblocks)  # (O, P) -> (G, O, P/G)
        # dW^T = col dy^T per block, summed: (G, K, P/G) @ (G, P/G, O) -> (G, K, O).
        # OpenBLAS runs this orientation faster than dy col^T at these shapes.
        part = self.ws("gW_blocks", (nblocks, g.k, g.o))
        np.matmul(col3, dy3.transpose(0, 2, 1), out=part)
        gWT = self.ws("gWT", (g.k, g.o))
        np.sum(part, axis=0, out=gWT)
        np.copyto(self.gWm, gWT.T)
        self.bias_grad(dy)
        if not need_dx:
            return None
        dcol = self.ws("dcol", (g.c, *g.kernel, g.oh, g.ow, n))
        # dcol = W^T dy: (K, O) @ (G, O, P/G) -> (G, K, P/G)
        np.matmul(self.Wm.T, dy3, out=blocks(dcol.reshape(g.k, -1), nblocks))
        dx = self.ws("dx", (g.c, g.h, g.w, n))
        col2im(dx, dcol, self.taps)  # KH*KW strided adds
        return dx


class WinogradF4(Algorithm):
    """Winograd F(4x4, 3x3) (netspec/kernels/winograd.py, which keeps U and V for backward;
    an eval-mode forward keeps no V, and a backward after it runs the forward again)."""

    name = "winograd"

    def __init__(self, g, params, grads, ws):
        super().__init__(g, params, grads, ws)
        self.wg = winograd.Winograd(g.c, g.o, g.h, g.w, ws)
        self.x = None  # the input of an eval-mode forward

    def forward(self, x, train, after=None):
        self.x = None if train else x
        return self.finish(self.wg.forward(x, self.W, self.b, keep=train), after)

    def backward(self, dy, need_dx=True):
        if self.x is not None:
            self.wg.forward(self.x, self.W, self.b)
            self.x = None
        return self.wg.backward(dy, self.gW, self.gb, need_dx)



def row_blocks(oh: int, row: int, max_cols: int) -> int:
    """Fewest blocks of whole output rows (a divisor of oh) with at most max_cols columns."""
    for g in range(1, oh + 1):
        if oh % g == 0 and (oh // g) * row <= max_cols:
            return g
    return oh


def blocks(a, g: int):
    """(R, P) -> view (G, R, P/G): G column blocks (whole output rows) as a GEMM batch."""
    return a.reshape(a.shape[0], g, -1).transpose(1, 0, 2)
