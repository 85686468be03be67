"""Winograd F(4x4, 3x3): a conv2d training algorithm for 3x3 convs (stride 1, padding 1),
wrapped by netspec/kernels/conv.py's `WinogradF4`; `suits` is its geometric rule.

Layout (C, H, W, N) as everywhere in netspec; th = ceil(H/4), tw = ceil(W/4). Each 6x6 tile d
(stride 4, of the input padded by 1 and up to a whole number of tiles) gives 4x4 outputs:

    U = G g G^T  (6x6 per 3x3 filter g[k, c])                                  (36, K, C)
    V = B^T d B  (6x6 per tile)                                                 (36, C, T)
    M = U @ V    (36 batched GEMMs)                                             (36, K, T)
    y tile = A^T M A  (4x4 per tile)
  backward, the adjoint of each step (V is kept from forward, as im2col keeps its col):
    dM = A dy A^T,  dU = dM @ V^T,  dW = G^T dU G,  dV = U^T @ dM,  dx = sum of tiles B dV B^T

36 multiplies per 16 outputs, against im2col's 144. The transforms are GEMMs with the 6x6 (or
4x6) matrices along one tile axis at a time (np.matmul broadcasts the matrix over the other
axis): a few BLAS calls instead of ~20 elementwise passes. Everything runs one block at a time,
a row of tiles (and, for big batches, a run of its samples: CHUNK_FLOATS), so that a block's
arrays stay in L2 between the calls; T = tw*m for a block of m samples.

It pays where each process runs one BLAS thread (its GEMMs are small); float32 results differ
from im2col's by rounding only (relative 1e-6 to 1e-5). Measurements: docs/performance.md.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], float)
# A block's transform arrays, (36, max(C, K), tw*m) for m samples of one row of tiles, hold at
# most about this many floats (1.2 MB in float32, about the L2 cache): a row splits into runs
# of samples only for large batches.
CHUNK_FLOATS = 300_000

# Smallest input channels and image side that take the algorithm (few channels leave the
# transforms most of the work; below 7 pixels most of a 6x6 tile is padding).
MIN_CHANNELS = 8
MIN_SIZE = 7


# Inference takes Winograd (plan option eval_conv 'auto') where its GEMMs are big enough to
# outweigh the transforms: C*K at least EVAL_MIN_CK and at least EVAL_MIN_TILES tiles per block
# (a row of tiles of a run of samples). Measured per layer at 1-64 samples, docs/performance.md.
EVAL_MIN_CK = 4096
EVAL_MIN_TILES = 16


def pays_at_inference(c: int, k: int, w: int, n: int) -> bool:
    """Whether an eval-mode forward of n samples (C -> K channels, width W) takes Winograd."""
    tw = -(-w // 4)
    run = min(n, max(1, CHUNK_FLOATS // (36 * max(c, k) * tw)))
    return c * k >= EVAL_MIN_CK and tw * run >= EVAL_MIN_TILES


def suits(c: int, h: int, w: int, geometry, pads) -> bool:
    """Whether conv2d trains a (C, H, W) input with Winograd: a 3x3 kernel, stride 1 and
    dilation 1 (geometry = (KH, KW, SH, SW, DH, DW)), padding 1 on every side, and enough
    channels and pixels to pay."""
    return (tuple(geometry) == (3, 3, 1, 1, 1, 1) and tuple(pads) == (1, 1, 1, 1)
            and c >= MIN_CHANNELS and min(h, w) >= MIN_SIZE)


def tiles(a, size: int, t, writeable: bool = False):
    """View (size, size, C, th, tw, N) of a (C, Hp, Wp, N): the size x size tiles at stride 4
    (writeable only for tiles that do not overlap: the 4x4 output tiles)."""
    s0, s1, s2, s3 = a.strides
    return as_strided(a, (size, size, a.shape[0], t[0], t[1], a.shape[-1]),
                      (s1, s2, s0, 4 * s1, 4 * s2, s3), writeable=writeable)


class Winograd:
    """F(4x4, 3x3), padding 1, stride 1, for one layer: x (C, H, W, N) -> y (K, H, W, N).

    Runs one row of tiles at a time (`_forward_row`, `_backward_row`), so that a row's
    transform arrays stay in cache between the BLAS calls; forward keeps U and every row's V
    for backward. ws is the layer's Workspace (buffers reused from step to step)."""

    def __init__(self, c: int, k: int, h: int, w: int, ws):
        self.c, self.k, self.h, self.w, self.ws = c, k, h, w, ws
        self.t = (-(-h // 4), -(-w // 4))  # tiles along H and W
        self.even = (4 * self.t[0], 4 * self.t[1]) == (h, w)
        self.BT, self.AT = BT.astype(ws.dtype), AT.astype(ws.dtype)
        self.GG = np.kron(G, G).astype(ws.dtype)  # (36, 9)

    def forward(self, x, weight, bias=None, keep: bool = True):
        """y (K, H, W, N) = conv(x, weight) + bias. keep=False (inference) reuses one block's V
        instead of keeping every block's for backward."""
        c, k, (th, tw), n = self.c, self.k, self.t, x.shape[-1]
        ws = self.ws
        U = ws("w4_U", (36, k, c))  # U = G g G^T: (36, 9) @ (9, K*C), from this step's weight
        np.matmul(self.GG, weight.reshape(k * c, 9).T, out=U.reshape(36, k * c))
        if keep:
            V = ws("w4_V", (th * 36 * c * tw * n,))  # every block's V, kept for backward
        else:
            V = ws("w4_V_block", (36 * c * tw * self._run(n),))  # one block's, reused
        yb = ws("w4_yb", (k, 4 * th, 4 * tw, n))  # y[k, 4ty + a, 4tx + b] = Y[a, b, k, ty, tx]
        for ty, (lo, hi), v in self._blocks(V, n, keep):
            self._forward_row(x[..., lo:hi], ty, U, v, yb[:, 4 * ty:4 * ty + 4, :, lo:hi])
        y = yb
        if not self.even:  # drop the last tiles' outputs beyond the image
            y = ws("w4_y", (k, self.h, self.w, n))
            np.copyto(y, yb[:, :self.h, :self.w])
        if bias is not None:
            y += bias[:, None, None, None]
        return y

    def _run(self, n: int) -> int:
        """The most samples in one block of a row of tiles (CHUNK_FLOATS)."""
        q = -(-n // max(1, CHUNK_FLOATS // (36 * max(self.c, self.k) * self.t[1])))
        return -(-n // q)

    def _blocks(self, V, n: int, keep: bool = True):
        """(tile row, (lo, hi) samples, that block's V (36*C*tw*(hi - lo),)) for every block:
        each row of tiles, in runs of samples if CHUNK_FLOATS asks for them; without keep, every
        block's V is the start of V."""
        th, tw, c = self.t[0], self.t[1], self.c
        per_sample = 36 * c * tw
        q = -(-n // max(1, CHUNK_FLOATS // (36 * max(c, self.k) * tw)))  # runs per row
        runs = [(i * n // q, (i + 1) * n // q) for i in range(q)]  # at most two lengths
        for ty in range(th):
            for lo, hi in runs:
                start = (ty * n + lo) * per_sample if keep else 0
                yield ty, (lo, hi), V[start:start + (hi - lo) * per_sample]

    def _inside(self, ty: int) -> tuple[int, int]:
        """(lo, hi): the rows lo..hi-1 of row ty's 6-row tiles that lie inside the image (tile
        row i is image row 4ty + i - 1)."""
        return max(0, 1 - 4 * ty), min(6, self.h + 1 - 4 * ty)

    def _tiles_of_row(self, x, ty: int):
        """D (6, 6, C, 1, tw, m): the 6x6 input tiles of row ty of tiles, from the block's
        samples x (C, H, W, m) of the layer's input. Tile (ty, tx) covers rows 4ty-1..4ty+4 and
        columns 4tx-1..4tx+4 of x; its entries outside x are the zero padding, copied from
        nowhere: D's columns outside are never written (zero since D was made), its rows outside
        are zeroed for the first and last rows of tiles. The inner tiles 1..tw-2 lie wholly
        inside x, tile 0 from its column 1 on and tile tw-1 up to x's last column."""
        c, w, tw, n = self.c, self.w, self.t[1], x.shape[-1]
        D = self.ws(f"w4_D{n}", (6, 6, c, 1, tw, n), zero=True)  # D[i, j, c, 0, tx]
        lo, hi = self._inside(ty)
        D[:lo] = 0
        D[hi:] = 0
        rows = x[:, 4 * ty - 1 + lo:4 * ty - 1 + hi]  # (C, hi - lo, W, m)
        d = D[lo:hi, :, :, 0]  # (hi - lo, 6, C, tw, m)
        np.copyto(d[:, 1:, :, 0], rows[:, :, :5].transpose(1, 2, 0, 3))  # tile 0, columns 0..4
        last = 4 * tw - 5  # tile tw-1's first column
        np.copyto(d[:, :w - last, :, tw - 1], rows[:, :, last:].transpose(1, 2, 0, 3))
        if tw > 2:  # tiles 1..tw-2: columns 4tx-1..4tx+4, as a strided view from column 3
            s0, s1, s2, s3 = rows.strides
            inner = as_strided(rows[:, :, 3:], (hi - lo, 6, c, tw - 2, n),
                               (s1, s2, s0, 4 * s2, s3), writeable=False)
            np.copyto(d[:, :, :, 1:tw - 1], inner)
        return D

    def _forward_row(self, x, ty: int, U, V, yr):
        """One block of tiles, row ty of tiles of the block's samples x (C, H, W, m) -> V
        (36*C*T,) and output rows yr (K, 4, 4tw, m), with T = tw*m (views of the whole batch's
        arrays)."""
        c, k, tw, n = self.c, self.k, self.t[1], x.shape[-1]
        T, ws = tw * n, self.ws
        D = self._tiles_of_row(x, ty)
        V1 = ws(f"w4_V1{n}", (6, 6 * c * T))
        np.matmul(self.BT, D.reshape(6, -1), out=V1)  # B^T along the tile rows: (6 xi, 6 j, C*T)
        np.matmul(self.BT, V1.reshape(6, 6, -1), out=V.reshape(6, 6, -1))  # along the columns
        M = ws(f"w4_M{n}", (36, k, T))
        np.matmul(U, V.reshape(36, c, T), out=M)  # (36, K, C) @ (36, C, T)
        Y1 = ws(f"w4_Y1{n}", (6, 4, k * T))
        np.matmul(self.AT, M.reshape(6, 6, -1), out=Y1)  # A^T along nu: (6 xi, 4 b, K*T)
        Y = ws(f"w4_Y{n}", (4, 4 * k * T))
        np.matmul(self.AT, Y1.reshape(6, -1), out=Y)  # along xi: (4 a, 4 b, K*T)
        np.copyto(tiles(yr, 4, (1, tw), writeable=True), Y.reshape(4, 4, k, 1, tw, n))

    def backward(self, dy, dweight, dbias=None, need_dx=True):
        """dweight[...] = dL/dweight, dbias[...] = sum of dy (if given); returns dx (C, H, W, N)
        (None without need_dx). Uses U and V of the last forward."""
        c, k, (th, tw), n = self.c, self.k, self.t, dy.shape[-1]
        ws = self.ws
        if dbias is not None:
            np.sum(dy.reshape(k, -1), axis=1, out=dbias)  # db = sum of dy over (H, W, N)
        dyb = dy
        if not self.even:
            dyb = ws("w4_dyb", (k, 4 * th, 4 * tw, n), zero=True)  # the cropped part stays 0
            dyb[:, :self.h, :self.w] = dy
        U, V = ws("w4_U", (36, k, c)), ws("w4_V", (th * 36 * c * tw * n,))
        dU, part = ws("w4_dU", (36, k, c)), ws("w4_dU_part", (36, k, c))
        dx = ws("dx", (c, self.h, self.w, n)) if need_dx else None
        for i, (ty, (lo, hi), v) in enumerate(self._blocks(V, n)):
            self._backward_row(dyb[:, 4 * ty:4 * ty + 4, :, lo:hi], U, v, part if i else dU,
                               None if dx is None else dx[..., lo:hi], ty)
            if i:
                dU += part
        # dW = G^T dU G: dW (K*C, 9) = dU^T (K*C, 36) @ GG (36, 9)
        np.matmul(dU.reshape(36, k * c).T, self.GG, out=dweight.reshape(k * c, 9))
        return dx

    def _backward_row(self, dyr, U, V, dU, dx, ty: int):
        """One block of tiles (row ty of tiles): dU = dM V^T (36, K, C) from output rows dyr
        (K, 4, 4tw, m), and unless dx is None, the block's tiles B dV B^T into dx (C, H, W, m),
        the block's samples of the layer's dx. The tiles cover padded rows 4ty..4ty+5, dx's rows
        4ty-1..4ty+4, of which those inside the image are written: the first two added to (the
        previous row of tiles wrote them) when ty > 0, set otherwise, the others set."""
        c, k, tw, n = self.c, self.k, self.t[1], dyr.shape[-1]
        T, ws = tw * n, self.ws
        dYt = ws(f"w4_dYt{n}", (4, 4, k, 1, tw, n))
        np.copyto(dYt, tiles(dyr, 4, (1, tw)))
        dM1 = ws(f"w4_dM1{n}", (6, 4 * k * T))
        np.matmul(self.AT.T, dYt.reshape(4, -1), out=dM1)  # A along a: (6 xi, 4 b, K*T)
        dM = ws(f"w4_dM{n}", (6, 6, k * T))
        np.matmul(self.AT.T, dM1.reshape(6, 4, -1), out=dM)  # along b: (6 xi, 6 nu, K*T)
        dM = dM.reshape(36, k, T)
        np.matmul(dM, V.reshape(36, c, T).transpose(0, 2, 1), out=dU)  # dM V^T
        if dx is None:
            return
        dV = ws(f"w4_dV{n}", (36, c, T))
        np.matmul(U.transpose(0, 2, 1), dM, out=dV)  # dV = U^T dM: (36, C, K) @ (36, K, T)
        dD1 = ws(f"w4_dD1{n}", (6, 6, c * T))
        np.matmul(self.BT.T, dV.reshape(6, 6, -1), out=dD1)  # B along nu -> j
        dD = ws(f"w4_dD{n}", (6, 6 * c * T))
        np.matmul(self.BT.T, dD1.reshape(6, -1), out=dD)  # along xi -> i: (6 i, 6 j, C*T)
        dD = dD.reshape(6, 6, c, tw, n)
        # the sum of the 6x6 tiles (stride 4: a tile's last 2 columns overlap the next tile's
        # first 2): columns 4tx + j of E, then the rows of E inside the image into dx
        E = ws(f"w4_E{n}", (6, c, 4 * tw + 2, n))
        np.copyto(E[:, :, :4 * tw].reshape(6, c, tw, 4, n),
                  dD[:, :4].transpose(0, 2, 3, 1, 4))  # j = 0..3: each column once
        E[:, :, 4 * tw:] = 0
        E[:, :, 4::4] += dD[:, 4]  # j = 4, 5 add to the next tile's columns 0, 1
        E[:, :, 5::4] += dD[:, 5]
        Er = E.transpose(1, 0, 2, 3)[:, :, 1:1 + self.w]  # (C, 6, W, N): dx's columns
        lo, hi = self._inside(ty)  # E's rows inside the image
        head = 2 if ty > 0 else lo  # E's rows lo..head-1 add to what the last block wrote
        r = 4 * ty - 1  # dx's row of E's row 0
        if head > lo:
            dx[:, r + lo:r + head] += Er[:, lo:head]
        np.copyto(dx[:, r + head:r + hi], Er[:, head:hi])
