"""conv2d's row-stacked GEMM training algorithm (`RowStacked`, chosen by
netspec/kernels/conv.py's rule): only the KW taps are copied, and the KH taps become row blocks
of one GEMM, added back with a shift of a row:

      col3[c, j, h, v, n] = xp[c, h, v*sw + j*dw, n]                  (C*KW, Hp*OW*N)
      ys = Ws @ col3,  Ws[i*O + o, c*KW + j] = W[o, c, i, j]           (KH*O, Hp*OW*N)
      y[o, h] = sum_i ys[i*O + o, h + i*dh]
  backward, with dys[i*O + o, h + i*dh] = dy[o, h] (zero elsewhere):
      dWs = dys col3^T,  dcol3 = Ws^T dys,  dx = col2im along W only (KW strided adds)

The GEMMs run in blocks of MAX_BLOCK columns (`gemm_columns`, `gemm_columns_nt`).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from netspec.kernels.col2im import col2im, col2im_plan
from netspec.kernels.conv import MAX_BLOCK, Algorithm


class RowStacked(Algorithm):
    """Training by one row-stacked GEMM (see the module docstring); its rule is
    netspec/kernels/conv.py's `_stacked_suits`."""

    name = "stacked"

    def __init__(self, g, params, grads, ws):
        super().__init__(g, params, grads, ws)
        self.taps = col2im_plan((g.h, g.w), (g.h, g.ow), (1, g.kernel[1]), (1, g.stride[1]),
                                (1, g.dilation[1]), (0, g.pads[2]))  # along W only
        self.col3 = None

    def im2col_w(self, xp, n):
        """xp (C, Hp, Wp, N) -> col3 (C, KW, Hp, OW, N) = xp[c, h, v*sw + j*dw]"""
        g, s = self.g, xp.strides
        col3 = self.ws("col3", (g.c, g.kernel[1], xp.shape[1], g.ow, n))
        np.copyto(col3, as_strided(xp, col3.shape, (s[0], g.dilation[1] * s[2], s[1],
                                                    g.stride[1] * s[2], s[3]),
                                   writeable=False))
        return col3

    def stacked_weight(self):
        """Ws (KH*O, C*KW): Ws[i*O + o, c*KW + j] = W[o, c, i, j]."""
        g = self.g
        Ws = self.ws("W_stack", (g.kernel[0] * g.o, g.c * g.kernel[1]))
        Ws.reshape(g.kernel[0], g.o, g.c, g.kernel[1])[...] = self.W.transpose(2, 0, 1, 3)
        return Ws

    def forward(self, x, train, after=None):
        g, n = self.g, x.shape[-1]
        (kh, kw), dh, o = g.kernel, g.dilation[0], g.o
        xp = self.pad(x)
        hp, r = xp.shape[1], g.ow * n  # padded rows; columns per output row
        col3 = self.col3 = self.im2col_w(xp, n)
        ys = self.ws("y_stack", (kh * o, hp * r))
        gemm_columns(self.stacked_weight(), col3.reshape(g.c * kw, -1), ys)
        y = self.ws("y", (o, g.oh, g.ow, n))
        y2, span = y.reshape(o, -1), g.oh * r  # y[o, h] = sum_i ys[i*O + o, h + i*dh]
        np.add(ys[:o, :span], ys[o:2 * o, dh * r:dh * r + span], out=y2)
        for i in range(2, kh):
            y2 += ys[i * o:(i + 1) * o, i * dh * r:i * dh * r + span]
        if self.b is not None:
            y2 += self.b[:, None]
        return self.finish(y, after)

    def backward(self, dy, need_dx=True):
        g, n = self.g, dy.shape[-1]
        (kh, kw), dh, o = g.kernel, g.dilation[0], g.o
        hp = g.h + g.pads[0] + g.pads[1]
        # dys[i*O + o, h + i*dh] = dy[o, h], zero elsewhere (the zero rows are never written)
        dys = self.ws("dy_stack", (kh * o, hp, g.ow, n), zero=True)
        for i in range(kh):
            dys[i * o:(i + 1) * o, i * dh:i * dh + g.oh] = dy
        dys2, col2 = dys.reshape(kh * o, -1), self.col3.reshape(g.c * kw, -1)
        gWs = self.ws("gW_stack", (g.c * kw, kh * o))  # dWs^T = col3 dys^T, summed over blocks
        gemm_columns_nt(col2, dys2, gWs)
        self.gW[...] = gWs.reshape(g.c, kw, kh, o).transpose(3, 0, 2, 1)
        if self.gb is not None:
            np.sum(dy.reshape(o, -1), axis=1, out=self.gb)
        if not need_dx:
            return None
        dcol3 = self.ws("dcol3", (g.c, kw, hp, g.ow, n))  # Ws^T dys: (C*KW, Hp*OW*N)
        gemm_columns(self.stacked_weight().T, dys2, dcol3.reshape(g.c * kw, -1))
        # col2im along W only (KW strided adds), on the unpadded rows pt..pt+h-1
        dx = self.ws("dx", (g.c, g.h, g.w, n))
        col2im(dx, dcol3[:, None, :, g.pads[0]:g.pads[0] + g.h], self.taps)
        return dx


def gemm_columns(a, b, out, block=None):
    """out = a @ b, in blocks of columns of b (see MAX_BLOCK)."""
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
