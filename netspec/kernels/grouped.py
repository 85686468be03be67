"""conv2d with groups > 1 by im2col: the G groups as one batched GEMM, never a Python loop over
groups or samples (netspec/kernels/conv.py describes the shared conventions). With Cg = C/G input
and Og = O/G output channels per group and Kg = Cg*KH*KW (C = G*Cg, so col's rows are already
grouped):
    colg = col.reshape(G, Kg, P),  Wg = W.reshape(G, Og, Kg)   (W is (O, Cg, KH, KW))
    y.reshape(G, Og, P) = Wg @ colg
    dWg = dyg colg^T,  dcolg = Wg^T dyg,  dx = col2im(dcol)
A depthwise conv (Cg = 1) runs its forward as an einsum over the KH*KW taps (numpy's batched
GEMM pays a call per channel for its 1 x KH*KW rows); in eval mode block by block of channels
whose col fits FUSED_BYTES, so the col stays in cache. `choose` gives depthwise convs with one
output channel per input channel to netspec/kernels/depthwise.py under 'auto', and to this
algorithm when im2col is asked for.
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.col2im import col2im
from netspec.kernels.conv import FUSED_BYTES, MAX_BLOCK, Im2col, row_blocks


class Grouped(Im2col):
    """groups > 1: im2col, then one batched GEMM over the groups (see the module docstring).
    Training and inference alike copy the whole col, (C*KH*KW, P), which backward reuses."""

    name = "grouped"

    def __init__(self, g, params, grads, ws):
        super().__init__(g, params, grads, ws)
        gr = g.groups
        self.Wg = self.W.reshape(gr, g.o // gr, g.k)  # (G, Og, Kg), views
        self.gWg = self.gW.reshape(gr, g.o // gr, g.k)

    def forward(self, x, train, after=None):
        g, n = self.g, x.shape[-1]
        xp = self.xp = self.pad(x)
        y = self.ws("y", (g.o, g.oh, g.ow, n))
        p = g.oh * g.ow * n
        depthwise = g.o == g.c == g.groups
        if not train:
            self.col = None  # a backward after this recomputes it
            if depthwise:
                self._depthwise_blocks(xp, n, y.reshape(g.o, p))
            else:
                self._grouped_blocks(xp, n, y.reshape(g.o, p))
        else:
            col = self.col = self.ws("col", (g.c, *g.kernel, g.oh, g.ow, n))
            np.copyto(col, self.windows(xp, n))  # (C, KH, KW, OH, OW, N)
            colg = col.reshape(g.groups, g.k, p)
            if depthwise:  # y[c, p] = sum_k W[c, k] col[c, k, p]
                np.einsum("ck,ckp->cp", self.Wg[:, 0], colg, out=y.reshape(g.o, p))
            else:  # (G, Og, Kg) @ (G, Kg, P) -> (G, Og, P): a GEMM per group, inside numpy
                np.matmul(self.Wg, colg, out=y.reshape(g.groups, -1, p))
        if self.b is not None:
            y.reshape(g.o, -1)[...] += self.b[:, None]
        return self.finish(y, after)

    def _grouped_blocks(self, xp, n, y2):
        """Eval-mode grouped forward, a block of output rows at a time (as Im2col's inference):
        the block's col in one cache-sized buffer, then (G, Og, Kg) @ (G, Kg, P/B) -> y."""
        g, ws = self.g, self.ws
        nblocks = row_blocks(g.oh, g.ow * n,
                             min(MAX_BLOCK, FUSED_BYTES // (g.c * g.kernel[0] * g.kernel[1]
                                                           * ws.dtype.itemsize)))
        rows = g.oh // nblocks
        buf = ws("col_block", (g.c, *g.kernel, rows, g.ow, n))
        cols = buf.reshape(g.groups, g.k, -1)  # (G, Kg, P/B)
        y3 = y2.reshape(g.o, nblocks, -1)  # (O, P) -> (O, B, P/B)
        part = ws("y_block", (g.groups, g.o // g.groups, cols.shape[-1]))  # contiguous: BLAS
        for i, win in enumerate(self.row_windows(xp, n, nblocks)):
            np.copyto(buf, win)
            np.matmul(self.Wg, cols, out=part)
            y3[:, i] = part.reshape(g.o, -1)

    def _depthwise_blocks(self, xp, n, y2):
        """Eval-mode depthwise forward, a block of channels at a time: the block's col in one
        cache-sized buffer, then y[c] = sum_k W[c, k] col[c, k] for the block."""
        g = self.g
        p = g.oh * g.ow * n
        per = g.k * p * self.ws.dtype.itemsize  # bytes of one channel's col
        cb = max(1, min(g.c, FUSED_BYTES // per))
        buf = self.ws("col_block", (cb, *g.kernel, g.oh, g.ow, n))
        win = self.windows(xp, n)
        W = self.Wg[:, 0]  # (C, KH*KW)
        for c0 in range(0, g.c, cb):
            c1 = min(g.c, c0 + cb)
            block = buf[:c1 - c0]
            np.copyto(block, win[c0:c1])
            np.einsum("ck,ckp->cp", W[c0:c1], block.reshape(c1 - c0, g.k, p), out=y2[c0:c1])

    def backward(self, dy, need_dx=True):
        g, n = self.g, dy.shape[-1]
        p = g.oh * g.ow * n
        if self.col is None:  # after an eval-mode forward: im2col now
            self.col = self.ws("col", (g.c, *g.kernel, g.oh, g.ow, n))
            np.copyto(self.col, self.windows(self.xp, n))
        colg = self.col.reshape(g.groups, g.k, p)
        dyg = dy.reshape(g.groups, -1, p)  # (G, Og, P)
        np.matmul(dyg, colg.transpose(0, 2, 1), out=self.gWg)  # (G, Og, P) @ (G, P, Kg)
        self.bias_grad(dy)
        if not need_dx:
            return None
        dcol = self.ws("dcol", (g.c, *g.kernel, g.oh, g.ow, n))
        if g.o == g.c == g.groups:  # depthwise: dcol[c, k, p] = W[c, k] dy[c, p], a broadcast
            # product (a batched GEMM of C outer products ran 7x slower)
            np.multiply(self.Wg[:, 0, :, None], dyg, out=dcol.reshape(g.groups, g.k, p))
        else:
            np.matmul(self.Wg.transpose(0, 2, 1), dyg, out=dcol.reshape(g.groups, g.k, p))
        dx = self.ws("dx", (g.c, g.h, g.w, n))
        col2im(dx, dcol, self.taps)
        return dx
