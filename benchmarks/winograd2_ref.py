"""The Winograd F(2x2, 3x3) training path that netspec/kernels/winograd.py's F(4x4, 3x3) replaced
(2026-11-30), kept unchanged as the reference that benchmarks/winograd4_probe.py measures
against. Not used by netspec.

Layout (C, H, W, N); T = th*tw*N, th = ceil(H/2), tw = ceil(W/2). Each 4x4 input tile d
(stride 2, of the input padded by 1) gives 2x2 outputs:
    U = G g G^T (16, K, C),  V = B^T d B (16, C, T),  M = U @ V (16, K, T),  y tile = A^T M A
  backward: dM = A dy A^T, dU = dM V^T, dW = G^T dU G, dV = U^T dM, dx = sum of tiles B dV B^T
The transforms are elementwise NumPy passes, one tile row at a time.
"""

import numpy as np

G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
GG = np.kron(G, G)  # (16, 9): GG[xi*4 + nu, i*3 + j] = G[xi, i] G[nu, j]
TILE_ROWS = 1  # tile rows per block (1, 2, 4 and 7 measured: benchmarks/README.md)


def _at(a, axis: int, index):
    """a[..., index, ...] with index on `axis`."""
    return a[(slice(None),) * axis + (index,)]


def add_tiles_B(v, out, axis: int, p, q, add_head: bool) -> None:
    """The adjoint of the input transform along one axis: tiles t (stride 2, overlapping by 2)
    of v_nu (4 arrays, n tiles along `axis`) -> out (2n + 2 along `axis`), each tile adding
    B v[t] = (v0, v1 - v2 + v3, v1 + v2 - v0, -v3) into entries 2t..2t + 3. Written per entry:
        out[2t] = v0[t] + p[t - 1],  out[2t + 1] = q[t] - v3[t - 1],
        p = v1 + v2 - v0,  q = v1 - v2 + v3  (buffers shaped like v_nu)
    Entries 0 and 1 are added to with add_head (a previous block's tail), set otherwise."""
    np.add(v[1], v[2], out=p)
    p -= v[0]
    np.subtract(v[1], v[2], out=q)
    q += v[3]
    n = v[0].shape[axis]
    even, odd = _at(out, axis, slice(0, None, 2)), _at(out, axis, slice(1, None, 2))
    np.add(_at(v[0], axis, slice(1, None)), _at(p, axis, slice(None, -1)),
           out=_at(even, axis, slice(1, n)))
    np.subtract(_at(q, axis, slice(1, None)), _at(v[3], axis, slice(None, -1)),
                out=_at(odd, axis, slice(1, n)))
    np.copyto(_at(even, axis, n), _at(p, axis, n - 1))
    np.negative(_at(v[3], axis, n - 1), out=_at(odd, axis, n))
    if add_head:
        _at(even, axis, 0)[...] += _at(v[0], axis, 0)
        _at(odd, axis, 0)[...] += _at(q, axis, 0)
    else:
        np.copyto(_at(even, axis, 0), _at(v[0], axis, 0))
        np.copyto(_at(odd, axis, 0), _at(q, axis, 0))


class Winograd:
    """F(2x2, 3x3), padding 1, stride 1, for one layer: x (C, H, W, N) -> y (K, H, W, N).

    forward keeps V for backward; ws is the layer's Workspace (buffers reused step to step)."""

    def __init__(self, c: int, k: int, h: int, w: int, ws, tile_rows: int | None = None):
        self.c, self.k, self.h, self.w, self.ws = c, k, h, w, ws
        self.th, self.tw = -(-h // 2), -(-w // 2)  # tiles along H and W
        self.even = (2 * self.th, 2 * self.tw) == (h, w)
        tb = tile_rows or TILE_ROWS
        self.blocks = [(y0, min(tb, self.th - y0)) for y0 in range(0, self.th, tb)]
        self.GG = GG.astype(ws.dtype)

    def forward(self, x, weight, bias=None):
        """y (K, H, W, N) = conv(x, weight) + bias; U and every block's V kept for backward."""
        c, k, th, tw, n = self.c, self.k, self.th, self.tw, x.shape[-1]
        ws = self.ws
        U = ws("wg_U", (16, k, c))  # U = G g G^T: (16, 9) @ (9, K*C), from this step's weight
        np.matmul(self.GG, weight.reshape(k * c, 9).T, out=U.reshape(16, k * c))
        xp = ws("wg_xp", (c, 2 * th + 2, 2 * tw + 2, n), zero=True)  # the border stays 0
        xp[:, 1:1 + self.h, 1:1 + self.w] = x  # padded by 1, and so that every tile is whole
        V = ws("wg_V", (16 * c * th * tw * n,))  # block after block, each contiguous
        Y = ws("wg_Y", (k, th, 2, tw, 2, n))
        for y0, r in self.blocks:
            Vb = V[16 * c * y0 * tw * n:16 * c * (y0 + r) * tw * n].reshape(4, 4, c, r, tw, n)
            self._forward_block(xp[:, 2 * y0:2 * (y0 + r) + 2], U, Vb, Y[:, y0:y0 + r])
        y = Y.reshape(k, 2 * th, 2 * tw, n)
        if not self.even:  # odd sizes: drop the last tiles' extra row/column
            y = ws("wg_y", (k, self.h, self.w, n))
            np.copyto(y, Y.reshape(k, 2 * th, 2 * tw, n)[:, :self.h, :self.w])
        if bias is not None:
            y += bias[:, None, None, None]
        return y

    def _forward_block(self, xb, U, V, Y):
        """xb (C, 2r+2, Wp, N) -> V (4, 4, C, r, tw, N) and Y (K, r, 2, tw, 2, N)."""
        k, tw, (r, n) = self.k, self.tw, V.shape[3::2]
        # t = B^T d along the tile's rows, d_i = xb[:, 2ty + i]                  (4, C, r, Wp, N)
        d = [xb[:, i:i + 2 * r:2] for i in range(4)]
        t = self.ws(f"wg_t{r}", (4, *d[0].shape))
        np.subtract(d[0], d[2], out=t[0])
        np.add(d[1], d[2], out=t[1])
        np.subtract(d[2], d[1], out=t[2])
        np.subtract(d[1], d[3], out=t[3])
        # V[xi, nu] = B^T along the tile's columns, s_j = t[:, :, :, 2tx + j]      (4, C, r, tw, N)
        s = [t[:, :, :, j:j + 2 * tw:2] for j in range(4)]
        np.subtract(s[0], s[2], out=V[:, 0])
        np.add(s[1], s[2], out=V[:, 1])
        np.subtract(s[2], s[1], out=V[:, 2])
        np.subtract(s[1], s[3], out=V[:, 3])
        M = self.ws(f"wg_M{r}", (16, k, r * tw * n))
        np.matmul(U, V.reshape(16, self.c, -1), out=M)  # (16, K, C) @ (16, C, T)
        M = M.reshape(4, 4, k, r, tw, n)
        # y = A^T M A: m = A^T along rows (2, 4, K, r, tw, N), then along columns into Y
        m = self.ws(f"wg_m{r}", (2, 4, k, r, tw, n))
        np.add(M[0], M[1], out=m[0])
        m[0] += M[2]
        np.subtract(M[1], M[2], out=m[1])
        m[1] -= M[3]
        Ya = Y.transpose(2, 4, 0, 1, 3, 5)  # (K, r, 2a, tw, 2b, N) -> (2a, 2b, K, r, tw, N)
        np.add(m[:, 0], m[:, 1], out=Ya[:, 0])
        Ya[:, 0] += m[:, 2]
        np.subtract(m[:, 1], m[:, 2], out=Ya[:, 1])
        Ya[:, 1] -= m[:, 3]

    def backward(self, dy, dweight, dbias=None, need_dx=True):
        """dweight[...] = dL/dweight, dbias[...] = sum of dy (if given); returns dx (C, H, W, N)
        (None without need_dx). Uses U and V of the last forward."""
        c, k, th, tw, n = self.c, self.k, self.th, self.tw, dy.shape[-1]
        ws = self.ws
        if self.even:
            dY = dy.reshape(k, th, 2, tw, 2, n)
        else:
            dY = ws("wg_dY", (k, 2 * th, 2 * tw, n), zero=True)  # the cropped border stays 0
            dY[:, :self.h, :self.w] = dy
            dY = dY.reshape(k, th, 2, tw, 2, n)
        U, V = ws("wg_U", (16, k, c)), ws("wg_V", (16 * c * th * tw * n,))
        if dbias is not None:
            np.sum(dy.reshape(k, -1), axis=1, out=dbias)  # db = sum of dy over (H, W, N)
        dU = ws("wg_dU", (16, k, c))
        dU.fill(0)
        dxp = None
        if need_dx:
            dxp = ws("wg_dxp", (c, 2 * th + 2, 2 * tw + 2, n))
            dxp[:, :2] = 0  # every block sets its rows but the first two, which it adds to
        for y0, r in self.blocks:
            Vb = V[16 * c * y0 * tw * n:16 * c * (y0 + r) * tw * n].reshape(16, c, r * tw * n)
            dxb = dxp[:, 2 * y0:2 * (y0 + r) + 2] if need_dx else None
            self._backward_block(dY[:, y0:y0 + r], U, Vb, dU, dxb)
        # dW = G^T dU G: dW (K*C, 9) = dU^T (K*C, 16) @ GG (16, 9)
        np.matmul(dU.reshape(16, k * c).T, self.GG, out=dweight.reshape(k * c, 9))
        if not need_dx:
            return None
        dx = ws("dx", (c, self.h, self.w, n))
        np.copyto(dx, dxp[:, 1:1 + self.h, 1:1 + self.w])
        return dx

    def _backward_block(self, dY, U, V, dU, dxb):
        """dY (K, r, 2, tw, 2, N), V (16, C, r*tw*N) -> dU += dM V^T, dxb (C, 2r+2, Wp, N) +=
        the block's tiles B dV B^T (None: no dx)."""
        c, k, tw, (r, n) = self.c, self.k, self.tw, dY.shape[1::4]
        # dM = A dY A^T, A = [[1, 0], [1, 1], [1, -1], [0, -1]]: along columns
        # e_a = (D_a0, D_a0 + D_a1, D_a0 - D_a1, -D_a1), then along rows
        # dM = (e0, e0 + e1, e0 - e1, -e1), e0 written straight into dM[0]   (4, 4, K, r, tw, N)
        D = dY.transpose(2, 4, 0, 1, 3, 5)  # (2a, 2b, K, r, tw, N)
        dM = self.ws(f"wg_dM{r}", (4, 4, k, r, tw, n))
        e1 = self.ws(f"wg_e{r}", (4, k, r, tw, n))
        for a, e in ((0, dM[0]), (1, e1)):
            np.copyto(e[0], D[a, 0])
            np.add(D[a, 0], D[a, 1], out=e[1])
            np.subtract(D[a, 0], D[a, 1], out=e[2])
            np.negative(D[a, 1], out=e[3])
        np.add(dM[0], e1, out=dM[1])
        np.subtract(dM[0], e1, out=dM[2])
        np.negative(e1, out=dM[3])
        dM = dM.reshape(16, k, -1)
        part = self.ws("wg_dU_part", (16, k, c))
        np.matmul(dM, V.transpose(0, 2, 1), out=part)  # dU += dM V^T: (16, K, T) @ (16, T, C)
        dU += part
        if dxb is None:
            return
        dV = self.ws(f"wg_dV{r}", (16, c, r * tw * n))
        np.matmul(U.transpose(0, 2, 1), dM, out=dV)  # dV = U^T dM: (16, C, K) @ (16, K, T)
        dV = dV.reshape(4, 4, c, r, tw, n)
        # dd = B dV B^T: along columns into each tile's 4 columns (tiles overlap by 2), then
        # along rows into the block's input rows (the first two shared with the last block)
        dt = self.ws(f"wg_dt{r}", (4, c, r, dxb.shape[2], n))
        pq = self.ws(f"wg_pq{r}", (2, 4, c, r, tw, n))
        add_tiles_B([dV[:, nu] for nu in range(4)], dt, 3, pq[0], pq[1], False)
        pq = self.ws(f"wg_pq_rows{r}", (2, c, r, dxb.shape[2], n))
        add_tiles_B(dt, dxb, 1, pq[0], pq[1], True)
