"""Winograd F(2x2, 3x3) probe: is a NumPy Winograd 3x3 conv faster than netspec's conv2d?

A measurement only (issue 11): for the five 3x3 conv shapes of benchmarks/specs/vgg-bn.yaml
(padding 1, stride 1) at batch 64 and 128, in float32 and netspec's (C, H, W, N) layout, it times
netspec's own conv2d step (built by netspec.plan.compiler.layer_plan, forward(train=True) + backward)
against a NumPy Winograd F(2x2, 3x3) forward and backward (dW and dx), interleaved, and prints
medians. It first checks in float64 that the Winograd forward and backward equal netspec's to
1e-10 relative error and exits 1 if not.

Winograd F(2x2, 3x3), with T = ceil(H/2)*ceil(W/2)*N tiles-times-samples:
    V[xi, nu] = (B^T d B)[xi, nu]  for each 4x4 input tile d (stride 2)        (16, C, T)
    U[xi, nu] = (G g G^T)[xi, nu]  for each 3x3 filter g[k, c]                 (16, K, C)
    M = U @ V  (16 batched GEMMs)                                               (16, K, T)
    y tile = A^T M A  (2x2 outputs per tile)
  backward, the adjoint of each step (V is kept from forward, as im2col keeps col):
    dM = A dy A^T,  dU = dM @ V^T,  dW = G^T dU G,  dV = U^T @ dM,  dx = sum of tiles B dV B^T
Each GEMM does 16 K C T = 4 K C H W N multiply-adds against im2col's 9 K C H W N (2.25x fewer).

    PYTHONPATH=$PWD python benchmarks/winograd_probe.py --threads 1 --repeats 9 \
        --json benchmarks/results/winograd-probe-2026-11-30.json
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from netspec.fsio import atomic_write
from netspec.nn.layers import LAYERS
from netspec.plan.compiler import layer_plan

# (C, K, H=W) of vgg-bn.yaml's convs after the first (the first has C = 1)
SHAPES = [(16, 16, 28), (16, 32, 14), (32, 32, 14), (32, 64, 7), (64, 64, 7)]

# B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]] and
# A^T = [[1, 1, 1, 0], [0, 1, -1, -1]] are written out as adds below; G is used as a matrix.
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], float)


def add_B(s, v):
    """s[j] += (B v)[j] along one axis, in place: (v0, v1 - v2 + v3, v1 + v2 - v0, -v3)"""
    s[0] += v[0]
    s[1] += v[1]
    s[1] -= v[2]
    s[1] += v[3]
    s[2] += v[1]
    s[2] += v[2]
    s[2] -= v[0]
    s[3] -= v[3]


class Winograd:
    """F(2x2, 3x3) conv with padding 1, stride 1, no bias: (C, H, W, N) -> (K, H, W, N).
    Buffers are allocated once per batch size and reused, as netspec's workspace does."""

    def __init__(self, weight, h, w):
        self.k, self.c = weight.shape[:2]
        self.h, self.w = h, w
        self.th, self.tw = -(-h // 2), -(-w // 2)  # tiles along H and W
        self.dtype = weight.dtype
        self.set_weight(weight)
        self.bufs = {}

    def set_weight(self, weight):
        """U = G g G^T, (16, K, C): precomputable once per optimizer step."""
        Gd = G.astype(self.dtype)
        self.U = np.ascontiguousarray(
            np.einsum("xi,kcij,yj->xykc", Gd, weight, Gd).reshape(16, self.k, self.c))

    def buf(self, name, shape, zero=False):
        b = self.bufs.get(name)
        if b is None or b.shape != shape:
            b = self.bufs[name] = np.zeros(shape, self.dtype)
        elif zero:
            b.fill(0)
        return b

    def pad(self, x):
        th, tw = self.th, self.tw
        xp = self.buf("xp", (self.c, 2 * th + 2, 2 * tw + 2, x.shape[-1]))  # the border stays 0
        xp[:, 1:1 + self.h, 1:1 + self.w] = x  # padded so that every tile is whole
        return xp

    def block(self, xp, tb, V, Y):
        """One block of tb tile rows: xp (C, 2tb+2, Wp, N) -> V (4, 4, C, tb, tw, N) and
        Y (K, tb, 2, tw, 2, N)."""
        c, k, tw, n = self.c, self.k, self.tw, xp.shape[-1]
        # rows: r_i = xp[:, 2ty + i]; t = B^T r along the tile's rows     (4, C, tb, Wp, N)
        r = [xp[:, i:i + 2 * tb:2] for i in range(4)]
        t = self.buf(f"t{tb},{n}", (4, c, tb, xp.shape[2], n))
        np.subtract(r[0], r[2], out=t[0])
        np.add(r[1], r[2], out=t[1])
        np.subtract(r[2], r[1], out=t[2])
        np.subtract(r[1], r[3], out=t[3])
        # columns: V[xi, nu] = B^T along the tile's columns               (4, 4, C, tb, tw, N)
        for xi in range(4):
            s = [t[xi][:, :, j:j + 2 * tw:2] for j in range(4)]
            np.subtract(s[0], s[2], out=V[xi, 0])
            np.add(s[1], s[2], out=V[xi, 1])
            np.subtract(s[2], s[1], out=V[xi, 2])
            np.subtract(s[1], s[3], out=V[xi, 3])
        M = self.buf(f"M{tb},{n}", (16, k, tb * tw * n))
        np.matmul(self.U, V.reshape(16, c, -1), out=M)  # (16, K, C) @ (16, C, T)
        M = M.reshape(4, 4, k, tb, tw, n)
        # A^T = [[1, 1, 1, 0], [0, 1, -1, -1]] along rows, then columns
        m = self.buf(f"m{tb},{n}", (2, 4, k, tb, tw, n))
        np.add(M[0], M[1], out=m[0])
        m[0] += M[2]
        np.subtract(M[1], M[2], out=m[1])
        m[1] -= M[3]
        for a in range(2):
            np.add(m[a, 0], m[a, 1], out=Y[:, :, a, :, 0])
            Y[:, :, a, :, 0] += m[a, 2]
            np.subtract(m[a, 1], m[a, 2], out=Y[:, :, a, :, 1])
            Y[:, :, a, :, 1] -= m[a, 3]

    def crop(self, Y):
        Y = Y.reshape(self.k, 2 * self.th, 2 * self.tw, -1)
        if (2 * self.th, 2 * self.tw) == (self.h, self.w):
            return Y
        return Y[:, :self.h, :self.w]  # odd sizes: the last tile's extra row/column is dropped

    def forward(self, x):
        """Whole-image transforms and one stack of 16 GEMMs; keeps V for backward."""
        n = x.shape[-1]
        V = self.buf("V", (4, 4, self.c, self.th, self.tw, n))
        Y = self.buf("Y", (self.k, self.th, 2, self.tw, 2, n))
        self.block(self.pad(x), self.th, V, Y)
        return self.crop(Y)

    def back_block(self, dY, V, dxp, dU):
        """One block of tb tile rows: dY (K, tb, 2, tw, 2, N) and its forward's V
        (16, C, tb*tw*N) -> dU += dM V^T, and dxp (C, 2tb+2, Wp, N) += its tiles' dx."""
        c, k, tb, tw, n = self.c, self.k, dY.shape[1], self.tw, dY.shape[-1]
        # dM = A dY A^T: along columns dm = (d0, d0 + d1, d0 - d1, -d1), then along rows
        e = self.buf(f"e{tb},{n}", (2, 4, k, tb, tw, n))
        for a in range(2):
            d0, d1 = dY[:, :, a, :, 0], dY[:, :, a, :, 1]
            np.copyto(e[a, 0], d0)
            np.add(d0, d1, out=e[a, 1])
            np.subtract(d0, d1, out=e[a, 2])
            np.negative(d1, out=e[a, 3])
        dM = self.buf(f"dM{tb},{n}", (4, 4, k, tb, tw, n))
        np.copyto(dM[0], e[0])
        np.add(e[0], e[1], out=dM[1])
        np.subtract(e[0], e[1], out=dM[2])
        np.negative(e[1], out=dM[3])
        dM = dM.reshape(16, k, -1)
        part = self.buf("dU_part", (16, k, c))
        np.matmul(dM, V.transpose(0, 2, 1), out=part)  # (16, K, T) @ (16, T, C)
        dU += part
        dV = self.buf(f"dV{tb},{n}", (16, c, tb * tw * n))
        np.matmul(self.U.transpose(0, 2, 1), dM, out=dV)  # (16, C, K) @ (16, K, T)
        dV = dV.reshape(4, 4, c, tb, tw, n)
        # dd = B dV B^T, B = BT^T: (v0, v1 - v2 + v3, v1 + v2 - v0, -v3) along columns,
        # each added into its tile's columns j of row-tile xi, then the same along rows
        dt = self.buf(f"dt{tb},{n}", (4, c, tb, dxp.shape[2], n), zero=True)
        for xi in range(4):
            add_B([dt[xi][:, :, j:j + 2 * tw:2] for j in range(4)], dV[xi])
        add_B([dxp[:, i:i + 2 * tb:2] for i in range(4)], dt)

    def back_prepare(self, dy):
        """dy (K, H, W, N) -> (dY (K, th, 2, tw, 2, N), zeroed dxp, zeroed dU)"""
        k, th, tw, n = self.k, self.th, self.tw, dy.shape[-1]
        dY = dy
        if (2 * th, 2 * tw) != (self.h, self.w):
            dY = self.buf("dY", (k, 2 * th, 2 * tw, n))  # the cropped border stays 0
            dY[:, :self.h, :self.w] = dy
        dxp = self.buf("dxp", (self.c, 2 * th + 2, 2 * tw + 2, n), zero=True)
        dU = self.buf("dU", (16, k, self.c), zero=True)
        return dY.reshape(k, th, 2, tw, 2, n), dxp, dU

    def back_finish(self, dU, dxp):
        Gd = G.astype(self.dtype)
        dW = np.einsum("xi,xykc,yj->kcij", Gd, dU.reshape(4, 4, self.k, self.c), Gd)  # G^T dU G
        return dW, dxp[:, 1:1 + self.h, 1:1 + self.w]

    def backward(self, dy):
        """(dW, dx) from dy (K, H, W, N); uses V from the last forward."""
        dY, dxp, dU = self.back_prepare(dy)
        self.back_block(dY, self.bufs["V"].reshape(16, self.c, -1), dxp, dU)
        return self.back_finish(dU, dxp)

    def forward_train(self, x, tb):
        """forward in blocks of tb tile rows (each block's V and M stay in cache while it is
        transformed and multiplied), keeping each block's V for backward_blocked."""
        n = x.shape[-1]
        xp = self.pad(x)
        Vs = self.buf("Vs", (self.th // tb, 4, 4, self.c, tb, self.tw, n))
        Y = self.buf("Y", (self.k, self.th, 2, self.tw, 2, n))
        for g, y0 in enumerate(range(0, self.th, tb)):
            self.block(xp[:, 2 * y0:2 * y0 + 2 * tb + 2], tb, Vs[g], Y[:, y0:y0 + tb])
        return self.crop(Y)

    def backward_blocked(self, dy, tb):
        """backward in blocks of tb tile rows, with the V blocks kept by forward_train."""
        dY, dxp, dU = self.back_prepare(dy)
        Vs = self.bufs["Vs"]
        for g, y0 in enumerate(range(0, self.th, tb)):
            self.back_block(dY[:, y0:y0 + tb], Vs[g].reshape(16, self.c, -1),
                            dxp[:, 2 * y0:2 * y0 + 2 * tb + 2], dU)
        return self.back_finish(dU, dxp)


def netspec_conv(c, k, hw, dtype, seed=0):
    layer = LAYERS["conv2d"].model_validate(
        {"type": "conv2d", "out_channels": k, "kernel_size": 3, "padding": 1, "bias": False})
    plan = layer_plan(layer, (c, hw, hw), dtype=dtype, seed=seed)
    return plan, plan.steps[0]


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def check(tb, n=4, tol=1e-10):
    """float64: both Winograd variants' y, dW and dx vs netspec's layer_plan; exits 1 above
    tol. Returns the worst relative error."""
    worst = 0.0
    for c, k, hw in SHAPES:
        plan, step = netspec_conv(c, k, hw, "float64")
        rng = np.random.default_rng(1)
        x = rng.standard_normal((c, hw, hw, n))
        dy = rng.standard_normal((k, hw, hw, n))
        y_ref = step.forward(x, True).copy()
        dx_ref = step.backward(dy, True).copy()
        dW_ref = plan.grads[f"{step.name}.weight"].copy()
        wg = Winograd(plan.params[f"{step.name}.weight"], hw, hw)
        errs = {}
        for tag, fwd, bwd, more in (("whole", wg.forward, wg.backward, ()),
                                    ("blocked", wg.forward_train, wg.backward_blocked, (tb,))):
            y = fwd(x, *more)
            dW, dx = bwd(dy, *more)
            errs.update({f"{tag} y": rel(y, y_ref), f"{tag} dW": rel(dW, dW_ref),
                         f"{tag} dx": rel(dx, dx_ref)})
        print(f"check float64 {c}->{k} @{hw}x{hw}: "
              + ", ".join(f"{key} {v:.1e}" for key, v in errs.items()))
        worst = max(worst, *errs.values())
    if not worst <= tol:
        print(f"FAIL: Winograd differs from netspec by {worst:.2e} > {tol:g}", file=sys.stderr)
        sys.exit(1)
    return worst


def median_ms(ts):
    return float(np.median(ts) * 1e3)


def time_case(c, k, hw, n, repeats, tb):
    plan, step = netspec_conv(c, k, hw, "float32")
    weight = plan.params[f"{step.name}.weight"]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((c, hw, hw, n)).astype(np.float32)
    dy = rng.standard_normal((k, hw, hw, n)).astype(np.float32)
    wg = Winograd(weight, hw, hw)
    T = {}

    def timed(key, fn, *args):
        t0 = time.perf_counter()
        fn(*args)
        T.setdefault(key, []).append(time.perf_counter() - t0)

    def run_netspec():
        timed("ns_fwd", step.forward, x, True)
        timed("ns_bwd", step.backward, dy, True)

    def run_whole():
        timed("wg_U", wg.set_weight, weight)  # once per optimizer step in training
        timed("wg_fwd", wg.forward, x)
        timed("wg_bwd", wg.backward, dy)
        V, M = wg.bufs["V"].reshape(16, c, -1), wg.bufs[f"M{wg.th},{n}"]
        timed("wg_gemm", np.matmul, wg.U, V, M)  # the 16 GEMMs alone: what transforms add

    def run_blocked():
        timed("blk_fwd", wg.forward_train, x, tb)
        timed("blk_bwd", wg.backward_blocked, dy, tb)

    runs = [run_netspec, run_whole, run_blocked]
    for run in runs:  # warm-up: buffers allocated
        run()
    T.clear()
    for i in range(repeats):  # interleaved, rotating which goes first
        for run in runs[i % 3:] + runs[:i % 3]:
            run()
    med = {key: median_ms(v) for key, v in T.items()}
    ns = med["ns_fwd"] + med["ns_bwd"]
    return {"C": c, "K": k, "HW": hw, "N": n, "tile_rows": tb, "median_ms": med,
            "times_ms": {key: [t * 1e3 for t in v] for key, v in T.items()},
            "fwd_ratio": med["wg_fwd"] / med["ns_fwd"],
            "bwd_ratio": med["wg_bwd"] / med["ns_bwd"],
            "step_ratio": (med["wg_U"] + med["wg_fwd"] + med["wg_bwd"]) / ns,
            "blk_fwd_ratio": med["blk_fwd"] / med["ns_fwd"],
            "blk_bwd_ratio": med["blk_bwd"] / med["ns_bwd"],
            "blk_step_ratio": (med["wg_U"] + med["blk_fwd"] + med["blk_bwd"]) / ns}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    ap.add_argument("--repeats", type=int, default=9, help="interleaved repeats (>= 7)")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--tile-rows", type=int, default=1,
                    help="tile rows per block of the blocked variant (default 1)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.repeats < 7:
        ap.error("--repeats must be >= 7")
    load_start = os.getloadavg()
    print(f"load average at start: {load_start}")
    worst = check(args.tile_rows)
    rows = []
    with threadpool_limits(limits=args.threads, user_api="blas"):
        blas = [{key: p.get(key) for key in
                 ("internal_api", "version", "architecture", "num_threads", "filepath")}
                for p in threadpool_info() if p.get("user_api") == "blas"]
        print("BLAS:", ", ".join(f"{b['internal_api']} {b['version']} {b['architecture']} "
                                 f"threads={b['num_threads']}" for b in blas))
        print(f"{'shape':>14} {'N':>4} | {'ns fwd':>6} {'wg fwd':>6} {'ratio':>5} "
              f"{'blk fwd':>7} {'ratio':>5} | {'ns bwd':>6} {'wg bwd':>6} {'ratio':>5} "
              f"{'blk bwd':>7} {'ratio':>5} | {'U':>5} {'gemm':>5} | {'step':>5} {'blk':>5}")
        for n in args.batches:
            for c, k, hw in SHAPES:
                r = time_case(c, k, hw, n, args.repeats, args.tile_rows)
                m = r["median_ms"]
                print(f"{f'{c}->{k} @{hw}x{hw}':>14} {n:>4} | {m['ns_fwd']:6.2f} "
                      f"{m['wg_fwd']:6.2f} {r['fwd_ratio']:5.2f} {m['blk_fwd']:7.2f} "
                      f"{r['blk_fwd_ratio']:5.2f} | {m['ns_bwd']:6.2f} {m['wg_bwd']:6.2f} "
                      f"{r['bwd_ratio']:5.2f} {m['blk_bwd']:7.2f} {r['blk_bwd_ratio']:5.2f} | "
                      f"{m['wg_U']:5.2f} {m['wg_gemm']:5.2f} | {r['step_ratio']:5.2f} "
                      f"{r['blk_step_ratio']:5.2f}", flush=True)
                rows.append(r)
    load_end = os.getloadavg()
    print(f"load average at end: {load_end}")
    print("times: medians in ms. ratio = Winograd / netspec (below 1: Winograd faster).\n"
          "wg = whole-image transforms and GEMMs; blk = in blocks of --tile-rows tile rows;\n"
          "U = G g G^T (once per step); gemm = wg's 16 forward GEMMs alone;\n"
          "step = (U + fwd + bwd) / netspec (fwd + bwd), for wg and blk")
    if args.json:
        out = {"threads": args.threads, "repeats": args.repeats, "tile_rows": args.tile_rows,
               "dtype": "float32", "layout": "(C, H, W, N)", "blas": blas,
               "numpy": np.__version__, "python": platform.python_version(),
               "machine": platform.machine(), "cpu_count": os.cpu_count(),
               "loadavg_start": load_start, "loadavg_end": load_end,
               "check_float64_max_rel_err": worst,
               "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
        atomic_write(args.json, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
