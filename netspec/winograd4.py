"""Winograd F(4x4, 3x3): conv2d's training path for 3x3 convs on small images (7x7, 8x8).

netspec/winograd.py chooses it (`training_path`) where F(2x2, 3x3) does not pay: on 7x7 images
F(2x2) computes 8x8 outputs in 16 4x4 tiles, while F(4x4) computes them in 4 6x6 tiles, with 36
multiplies per 16 outputs instead of 64 (and im2col's 144). The GEMMs of the 7x7 convs already
run near OpenBLAS's peak, so only fewer multiplies make them faster.
Layout (C, H, W, N) as everywhere in netspec; th = ceil(H/4), tw = ceil(W/4), T = th*tw*N.
Each 6x6 tile d (stride 4, of the input padded by 1 and up to a whole number of tiles) gives
4x4 outputs:

    U = G g G^T  (6x6 per 3x3 filter g[k, c])                                  (36, K, C)
    V = B^T d B  (6x6 per tile)                                                 (36, C, T)
    M = U @ V    (36 batched GEMMs)                                             (36, K, T)
    y tile = A^T M A  (4x4 per tile)
  backward, the adjoint of each step (V is kept from forward):
    dM = A dy A^T,  dU = dM @ V^T,  dW = G^T dU G,  dV = U^T @ dM,  dx = sum of tiles B dV B^T

Unlike netspec/winograd.py, the transforms are GEMMs with the 6x6 (or 4x6) matrices, applied
along one tile axis at a time (np.matmul broadcasts the matrix over the other axis): with 4
tiles per image the arrays are small, and a few BLAS calls beat ~20 elementwise passes.
Measured against conv2d's im2col path (benchmarks/winograd4_probe.py, one BLAS thread, forward +
backward): 32->64 and 64->64 at 7x7 took 0.70-0.84 of the time at 32 and 64 samples; at 14x14
F(2x2) is faster (F(4x4) 1.02-1.44 of it), and at 28x28 it depends on the batch (0.86 at 32
samples, 1.33 at 64). float32 errors relative to im2col: 2e-6 to 8e-6, as F(2x2)'s.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], float)
SIZES = (7, 8)  # image sides that take this path (two tiles of 4 a side; 7 was measured)


def tiles(a, size: int, t, writeable: bool = False):
    """View (size, size, C, th, tw, N) of a (C, Hp, Wp, N): the size x size tiles at stride 4
    (writeable only for tiles that do not overlap: the 4x4 output tiles)."""
    s0, s1, s2, s3 = a.strides
    return as_strided(a, (size, size, a.shape[0], t[0], t[1], a.shape[-1]),
                      (s1, s2, s0, 4 * s1, 4 * s2, s3), writeable=writeable)


class Winograd4:
    """F(4x4, 3x3), padding 1, stride 1, for one layer: x (C, H, W, N) -> y (K, H, W, N).

    forward keeps U and V for backward; ws is the layer's Workspace (buffers reused)."""

    def __init__(self, c: int, k: int, h: int, w: int, ws):
        self.c, self.k, self.h, self.w, self.ws = c, k, h, w, ws
        self.t = (-(-h // 4), -(-w // 4))  # tiles along H and W
        self.even = (4 * self.t[0], 4 * self.t[1]) == (h, w)
        self.BT, self.AT = BT.astype(ws.dtype), AT.astype(ws.dtype)
        self.GG = np.kron(G, G).astype(ws.dtype)  # (36, 9)

    def forward(self, x, weight, bias=None):
        """y (K, H, W, N) = conv(x, weight) + bias."""
        c, k, (th, tw), n = self.c, self.k, self.t, x.shape[-1]
        T, ws = th * tw * n, self.ws
        U = ws("w4_U", (36, k, c))  # U = G g G^T: (36, 9) @ (9, K*C), from this step's weight
        np.matmul(self.GG, weight.reshape(k * c, 9).T, out=U.reshape(36, k * c))
        xp = ws("w4_xp", (c, 4 * th + 2, 4 * tw + 2, n), zero=True)  # the border stays 0
        xp[:, 1:1 + self.h, 1:1 + self.w] = x
        D = ws("w4_D", (6, 6, c, th, tw, n))  # D[i, j, c, ty, tx] = xp[c, 4ty + i, 4tx + j]
        np.copyto(D, tiles(xp, 6, self.t))
        V1 = ws("w4_V1", (6, 6 * c * T))
        np.matmul(self.BT, D.reshape(6, -1), out=V1)  # B^T along the tile rows: (6 xi, 6 j, C*T)
        V = ws("w4_V", (6, 6, c * T))
        np.matmul(self.BT, V1.reshape(6, 6, -1), out=V)  # along the columns: (6 xi, 6 nu, C*T)
        M = ws("w4_M", (36, k, T))
        np.matmul(U, V.reshape(36, c, T), out=M)  # (36, K, C) @ (36, C, T)
        Y1 = ws("w4_Y1", (6, 4, k * T))
        np.matmul(self.AT, M.reshape(6, 6, -1), out=Y1)  # A^T along nu: (6 xi, 4 b, K*T)
        Y = ws("w4_Y", (4, 4 * k * T))
        np.matmul(self.AT, Y1.reshape(6, -1), out=Y)  # along xi: (4 a, 4 b, K*T)
        yb = ws("w4_yb", (k, 4 * th, 4 * tw, n))  # y[k, 4ty + a, 4tx + b] = Y[a, b, k, ty, tx]
        np.copyto(tiles(yb, 4, self.t, writeable=True), Y.reshape(4, 4, k, th, tw, n))
        y = yb
        if not self.even:  # drop the last tiles' outputs beyond the image
            y = ws("w4_y", (k, self.h, self.w, n))
            np.copyto(y, yb[:, :self.h, :self.w])
        if bias is not None:
            y += bias[:, None, None, None]
        return y

    def backward(self, dy, dweight, dbias=None, need_dx=True):
        """dweight[...] = dL/dweight, dbias[...] = sum of dy (if given); returns dx (C, H, W, N)
        (None without need_dx). Uses U and V of the last forward."""
        c, k, (th, tw), n = self.c, self.k, self.t, dy.shape[-1]
        T, ws = th * tw * n, self.ws
        if dbias is not None:
            np.sum(dy.reshape(k, -1), axis=1, out=dbias)  # db = sum of dy over (H, W, N)
        dyb = dy
        if not self.even:
            dyb = ws("w4_dyb", (k, 4 * th, 4 * tw, n), zero=True)  # the cropped part stays 0
            dyb[:, :self.h, :self.w] = dy
        dYt = ws("w4_dYt", (4, 4, k, th, tw, n))
        np.copyto(dYt, tiles(dyb, 4, self.t))
        dM1 = ws("w4_dM1", (6, 4 * k * T))
        np.matmul(self.AT.T, dYt.reshape(4, -1), out=dM1)  # A along a: (6 xi, 4 b, K*T)
        dM = ws("w4_dM", (6, 6, k * T))
        np.matmul(self.AT.T, dM1.reshape(6, 4, -1), out=dM)  # along b: (6 xi, 6 nu, K*T)
        dM = dM.reshape(36, k, T)
        U, V = ws("w4_U", (36, k, c)), ws("w4_V", (6, 6, c * T)).reshape(36, c, T)
        dU = ws("w4_dU", (36, k, c))
        np.matmul(dM, V.transpose(0, 2, 1), out=dU)  # dU = dM V^T: (36, K, T) @ (36, T, C)
        # dW = G^T dU G: dW (K*C, 9) = dU^T (K*C, 36) @ GG (36, 9)
        np.matmul(dU.reshape(36, k * c).T, self.GG, out=dweight.reshape(k * c, 9))
        if not need_dx:
            return None
        dV = ws("w4_dV", (36, c, T))
        np.matmul(U.transpose(0, 2, 1), dM, out=dV)  # dV = U^T dM: (36, C, K) @ (36, K, T)
        dD1 = ws("w4_dD1", (6, 6, c * T))
        np.matmul(self.BT.T, dV.reshape(6, 6, -1), out=dD1)  # B along nu -> j
        dD = ws("w4_dD", (6, 6 * c * T))
        np.matmul(self.BT.T, dD1.reshape(6, -1), out=dD)  # along xi -> i: (6 i, 6 j, C*T)
        dD = dD.reshape(6, 6, c, th, tw, n)
        # dxp = the sum of the 6x6 tiles (stride 4: a tile's last 2 columns and rows overlap the
        # next tile's first 2), one axis at a time: columns 4tx + j of E, then rows 4ty + i
        E = ws("w4_E", (6, c, th, 4 * tw + 2, n))
        np.copyto(E[:, :, :, :4 * tw].reshape(6, c, th, tw, 4, n),
                  dD[:, :4].transpose(0, 2, 3, 4, 1, 5))  # j = 0..3: each column once
        E[:, :, :, 4 * tw:] = 0
        E[:, :, :, 4::4] += dD[:, 4]  # j = 4, 5 add to the next tile's columns 0, 1
        E[:, :, :, 5::4] += dD[:, 5]
        dxp = ws("w4_dxp", (c, 4 * th + 2, 4 * tw + 2, n))
        np.copyto(dxp[:, :4 * th].reshape(c, th, 4, 4 * tw + 2, n), E[:4].transpose(1, 2, 0, 3, 4))
        dxp[:, 4 * th:] = 0
        dxp[:, 4::4] += E[4]
        dxp[:, 5::4] += E[5]
        dx = ws("dx", (c, self.h, self.w, n))
        np.copyto(dx, dxp[:, 1:1 + self.h, 1:1 + self.w])
        return dx
