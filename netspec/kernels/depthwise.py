"""Depthwise conv2d (groups = in = out channels) by direct accumulation of the kernel taps, with
no im2col (netspec/kernels/conv.py describes the shared conventions). Each channel has its own
KH*KW weights, so there is no GEMM to give BLAS: the work is KH*KW multiply-adds per output, and
the cost is memory passes. This algorithm makes every pass one long contiguous run.

Phases. Tap (i, j) of output (oh, ow) reads the padded input xp[oh*sh + i*dh, ow*sw + j*dw]. With
    i*dh = ti*sh + a,  j*dw = tj*sw + b   (a < sh, b < sw: the tap's phase)
that is P_ab[oh + ti, ow + tj], where the phase image P_ab[r, w] = xp[r*sh + a, w*sw + b]: a
stride-1 correlation on each phase image (stride 1: one phase, P = xp). Every phase image is
Hq x Wq, Hq = OH + max ti, Wq = OW + max tj, and the taps of one phase form a regular grid.

Wide rows. On the batch-innermost layout a position (r, w, n) of a phase image sits at flat
offset (r*Wq + w)*N + n of its channel, so if the output is computed Wq columns wide,
    yw[c, q] = sum_taps W[c, i, j] * P[c, phase_ab + (ti*Wq + tj)*N + q],   q < OH*Wq*N,
each tap reads one contiguous run of its channel: an einsum over a strided view of the taps
(numpy's sum of products, one pass per tap, inner loop over q), and no copy of the windows.
The Wq - OW extra columns of each row are garbage that y = yw[:, :, :OW] drops (their reads
run over into the next row, or into a slack of max tj columns after the channel).

Backward, with dy padded into D (C, OH + 2 max ti, Wq, N): dy[oh, ow] at D[max ti + oh,
max tj + ow], zeros elsewhere. Then D's rows from (max ti, max tj) on are dy Wq columns wide with
zeros in the extra columns, aligned with yw's q, and
    dW[c, i, j] = sum_q dyw[c, q] * P[c, phase_ab + (ti*Wq + tj)*N + q]     (an einsum per phase)
    dP_ab[c, r, w] = sum_taps of the phase W[c, i, j] * D[c, r + max ti - ti, w + max tj - tj]
                   (the same tap sum on D with the phase's kernel flipped; reads past a row's end
                    land in the next row's zero margin), and dx[h, v] = dP_ab[r, w] where
                    r*sh + a = h + pt, w*sw + b = v + pl: each input position lies in one phase.
Forward and backward run block by block of channels sized to stay in cache (BLOCK_BYTES).
Training keeps every channel's phase images P for backward; inference reuses one block's, and a
backward after it (the gradient checker's, rare) makes them all again from the input.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from netspec.kernels.conv import Algorithm, Geometry

# Channels per block: the block's phase images, wide output and padded dy take about this many
# bytes, so each pass after the first reads from cache. Measured (docs/performance.md): in
# training blocks of 4 MiB beat 1 MiB (the L2) by 4-11%, numpy's per-call costs outweighing L2
# misses, and unblocked passes by 3-11%. Inference reuses one block's phase images (nothing is
# kept for backward): there 2 MiB blocks beat 4 MiB by up to 9% on small images, from cold
# caches.
BLOCK_BYTES = 4 << 20
EVAL_BLOCK_BYTES = 2 << 20


def _phases(k: int, dil: int, stride: int) -> dict[int, list[tuple[int, int]]]:
    """{phase: [(tap, offset), ...]} along one axis: tap t reads phase image `phase` at `offset`
    (t*dil = offset*stride + phase)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for t in range(k):
        off, phase = divmod(t * dil, stride)
        out.setdefault(phase, []).append((t, off))
    return out


def _grid(taps: list[tuple[int, int]]) -> tuple[np.ndarray, int, int]:
    """(taps, first offset, offset step) of one phase's taps, a regular grid."""
    ks, offs = [t for t, _ in taps], [o for _, o in taps]
    step = offs[1] - offs[0] if len(offs) > 1 else 1
    assert offs == list(range(offs[0], offs[0] + step * len(offs), step))
    return np.array(ks), offs[0], step


def copy_pixels(dst, src) -> None:
    """dst[...] = src for (..., W, N) arrays with contiguous N. When the W axis is strided (a
    stride-2 phase), each pixel's N values are copied as one item of N*itemsize bytes: numpy
    copies runs of N floats one inner loop at a time, about twice as slow at N = 16."""
    item = dst.itemsize
    if (dst.strides[-2] == src.strides[-2] == dst.shape[-1] * item
            or dst.strides[-1] != item or src.strides[-1] != item):
        np.copyto(dst, src)
        return
    pixel = np.dtype((np.void, dst.shape[-1] * dst.itemsize))
    np.copyto(dst.view(pixel), src.view(pixel))


class Depthwise(Algorithm):
    """Depthwise conv by tap sums over phase images (see the module docstring)."""

    name = "depthwise"

    def __init__(self, g: Geometry, params, grads, ws):
        super().__init__(g, params, grads, ws)
        rows = _phases(g.kernel[0], g.dilation[0], g.stride[0])
        cols = _phases(g.kernel[1], g.dilation[1], g.stride[1])
        self.mi = max(o for taps in rows.values() for _, o in taps)  # max ti
        self.mj = max(o for taps in cols.values() for _, o in taps)  # max tj
        self.hq, self.wq = g.oh + self.mi, g.ow + self.mj
        # one entry per phase image: (a, b, its index, row taps, ti0, dti, col taps, tj0, dtj)
        self.phases = [(a, b, n, *_grid(rows[a]), *_grid(cols[b]))
                       for n, (a, b) in enumerate((a, b) for a in sorted(rows)
                                                  for b in sorted(cols))]
        spans = [(self._span(a, g.pads[0], g.h, g.stride[0], self.hq),
                  self._span(b, g.pads[2], g.w, g.stride[1], self.wq))
                 for a, b, *_ in self.phases]
        # does backward write every input position? (not when a phase is unused, or when input
        # rows or columns past the last output's window are read by no tap)
        written = sum((r1 - r0) * (w1 - w0) for (r0, r1, _), (w0, w1, _) in spans)
        self.covers = written == g.h * g.w
        self.P = None  # (C, S) phase images of the last training forward, kept for backward
        self.x = None  # the input of the last eval-mode forward

    # ------------------------------------------------------------------ geometry helpers

    def _span(self, phase: int, pad: int, size: int, stride: int, count: int):
        """(first, end) phase-image index r with r*stride + phase - pad inside [0, size), and the
        input index of the first: the rows (columns) of a phase image that hold input."""
        lo = max(0, -((phase - pad) // stride))
        hi = min(count, (size - 1 + pad - phase) // stride + 1) if size - 1 + pad >= phase else 0
        return lo, max(lo, hi), lo * stride + phase - pad

    def _images(self, x, c0, c1, P):
        """P's phase images from x[c0:c1], P (c1 - c0, S) (their zero borders are never
        written)."""
        g, hq, wq, n = self.g, self.hq, self.wq, x.shape[-1]
        sh, sw = g.stride
        imgs = P[:, :len(self.phases) * hq * wq * n].reshape(c1 - c0, -1, hq, wq, n)
        for a, b, k, *_ in self.phases:
            r0, r1, h0 = self._span(a, g.pads[0], g.h, sh, hq)
            w0, w1, v0 = self._span(b, g.pads[2], g.w, sw, wq)
            if r1 > r0 and w1 > w0:
                copy_pixels(imgs[:, k, r0:r1, w0:w1],
                            x[c0:c1, h0:h0 + (r1 - r0 - 1) * sh + 1:sh,
                              v0:v0 + (w1 - w0 - 1) * sw + 1:sw])

    def _taps(self, A, n: int, base: int, ks_i, step_i, ks_j, step_j, q: int):
        """View (channels, len(ks_i), len(ks_j), q) of A (channels, S): tap (u, v) starts at
        flat offset base + (u*step_i*Wq + v*step_j)*N of its channel."""
        row = A[:, base:]
        s0, s1 = row.strides
        return as_strided(row, (A.shape[0], len(ks_i), len(ks_j), q),
                          (s0, step_i * self.wq * n * s1, step_j * n * s1, s1), writeable=False)

    def _block(self, per_channel: int, budget: int = 0) -> int:
        """Channels per block: per_channel floats each within `budget` bytes."""
        budget = budget or BLOCK_BYTES
        return max(1, min(self.g.c, budget // (per_channel * self.ws.dtype.itemsize)))

    def size(self, n: int) -> int:
        """Floats of one channel's phase images, with the slack after them."""
        return len(self.phases) * self.hq * self.wq * n + self.mj * n

    # ------------------------------------------------------------------ forward

    def forward(self, x, train, after=None):
        g, n, hq, wq = self.g, x.shape[-1], self.hq, self.wq
        q = g.oh * wq * n  # wide output columns per channel
        size = self.size(n)
        y = self.ws("y", (g.o, g.oh, g.ow, n))
        Wk = self.W[:, 0]  # (C, KH, KW)
        cb = self._block(size + q, BLOCK_BYTES if train else EVAL_BLOCK_BYTES)
        if train:  # every channel's phase images, kept for backward
            P = self.P = self.ws("phases", (g.c, size), zero=True)
        else:  # one block's, reused; a backward after this makes them all from x
            P, self.P, self.x = self.ws("phases_block", (cb, size), zero=True), None, x
        yw = self.ws("y_wide", (cb, q))
        tmp = self.ws("y_part", (cb, q)) if len(self.phases) > 1 else None
        for c0 in range(0, g.c, cb):
            c1 = min(g.c, c0 + cb)
            Pb = P[c0:c1] if train else P[:c1 - c0]
            self._images(x, c0, c1, Pb)
            out = yw[:c1 - c0]
            for a, b, k, ki, ti0, dti, kj, tj0, dtj in self.phases:
                taps = self._taps(Pb, n, (k * hq * wq + ti0 * wq + tj0) * n,
                                  ki, dti, kj, dtj, q)
                w = Wk[c0:c1, ki[:, None], kj]  # (cb, taps_i, taps_j)
                if k == 0:
                    np.einsum("cuv,cuvq->cq", w, taps, out=out)
                else:  # the phases' sums add up
                    np.einsum("cuv,cuvq->cq", w, taps, out=tmp[:c1 - c0])
                    out += tmp[:c1 - c0]
            yb = y[c0:c1]
            np.copyto(yb, out.reshape(c1 - c0, g.oh, wq, n)[:, :, :g.ow])
            if self.b is not None:
                yb += self.b[c0:c1, None, None, None]
            if after is not None:
                after(yb.reshape(c1 - c0, -1), c0, c1)
        return y

    # ------------------------------------------------------------------ backward

    def backward(self, dy, need_dx=True):
        g, n, hq, wq, mi, mj = self.g, dy.shape[-1], self.hq, self.wq, self.mi, self.mj
        sh, sw = g.stride
        q = g.oh * wq * n
        D = self.ws("dy_padded", (g.c, ((g.oh + 2 * mi) * wq + mj) * n), zero=True)
        dy_at = (mi * wq + mj) * n  # where dy's wide rows start in D
        if self.P is None:  # the forward was in eval mode: every channel's phase images now
            self.P = self.ws("phases", (g.c, self.size(n)), zero=True)
            self._images(self.x, 0, g.c, self.P)
        P, Wk, gWk = self.P, self.W[:, 0], self.gW[:, 0]
        self.bias_grad(dy)
        dx = self.ws("dx", (g.c, g.h, g.w, n)) if need_dx else None
        if dx is not None and not self.covers:
            dx.fill(0)  # input positions no tap reads
        cb = self._block(P.shape[1] + D.shape[1] + hq * wq * n)
        dP = self.ws("dphase", (cb, hq * wq * n)) if need_dx else None
        for c0 in range(0, g.c, cb):
            c1 = min(g.c, c0 + cb)
            Db = D[c0:c1, :(g.oh + 2 * mi) * wq * n].reshape(c1 - c0, -1, wq, n)  # + slack
            np.copyto(Db[:, mi:mi + g.oh, mj:mj + g.ow], dy[c0:c1])
            dyw = D[c0:c1, dy_at:dy_at + q]  # dy, Wq columns wide (zeros beyond OW)
            for a, b, k, ki, ti0, dti, kj, tj0, dtj in self.phases:
                taps = self._taps(P[c0:c1], n, (k * hq * wq + ti0 * wq + tj0) * n,
                                  ki, dti, kj, dtj, q)
                for u, i in enumerate(ki):  # dW[c, i, j] = dyw[c] . tap (i, j)[c]: a dot per
                    for v, j in enumerate(kj):  # channel (BLAS), 1.5x faster than an einsum
                        np.vecdot(dyw, taps[:, u, v], out=gWk[c0:c1, i, j])
                if dx is None:
                    continue
                r0, r1, h0 = self._span(a, g.pads[0], g.h, sh, hq)
                w0, w1, v0 = self._span(b, g.pads[2], g.w, sw, wq)
                if r1 <= r0 or w1 <= w0:
                    continue
                # dP[r, w] for the rows r0..r1 that hold input: the flipped taps on D, whose
                # last tap (largest offsets) sits at D[r + mi - ti_max, w + mj - tj_max]
                ti1, tj1 = ti0 + dti * (len(ki) - 1), tj0 + dtj * (len(kj) - 1)
                rows = (r1 - r0) * wq * n
                flipped = self._taps(D[c0:c1], n, ((r0 + mi - ti1) * wq + mj - tj1) * n,
                                     ki, dti, kj, dtj, rows)
                w = Wk[c0:c1, ki[::-1, None], kj[::-1]]
                part = dP[:c1 - c0, :rows]
                np.einsum("cuv,cuvq->cq", w, flipped, out=part)
                copy_pixels(dx[c0:c1, h0:h0 + (r1 - r0 - 1) * sh + 1:sh,
                               v0:v0 + (w1 - w0 - 1) * sw + 1:sw],
                            part.reshape(c1 - c0, r1 - r0, wq, n)[:, :, w0:w1])
        return dx
