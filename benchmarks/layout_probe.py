"""Channels-last probe: would a (positions, K) im2col make netspec's 3x3 convs faster?

A measurement only (issue 11; nothing in netspec/ uses it). OpenBLAS (0.3.31, SkylakeX kernels,
one thread) multiplies a thin weight matrix faster from the right than from the left when the
data sits in cache: (P, K) @ (K, O) with P = 1,024 rows ran at 76-98 GFLOP/s where netspec's
(O, K) @ (K, P) ran at 43-66 for O = 16 or 32. That orientation needs the im2col matrix with K
contiguous, i.e. channels last. This script builds it from netspec's (C, H, W, N) input:

    xp (Hp, N, Wp, C) = x transposed and zero-padded               (one transposing copy)
    col[h, n, w, i, (j, c)] = xp[h + i, n, w*C : w*C + 3C]         (runs of 3C contiguous floats)
    yT (H, N, W, O) = col (P, 9C) @ W^T (9C, O),  in blocks of --rows output rows while hot
    y (O, H, W, N) = yT transposed back                             (one transposing copy)

and times its forward against netspec's conv2d forward (layer_plan, train=True: im2col or the
row-stacked path, as netspec picks), interleaved, medians. It first checks in float64 that both
give the same y (exits 1 above 1e-10 relative).

    PYTHONPATH=$PWD python benchmarks/layout_probe.py --threads 1 --repeats 11
"""

import argparse
import sys
import time

import numpy as np
from numpy.lib.stride_tricks import as_strided
from threadpoolctl import threadpool_info, threadpool_limits

from netspec.nn.layers import LAYERS
from netspec.plan.compiler import layer_plan

SHAPES = [(16, 16, 28), (16, 32, 14), (32, 32, 14), (32, 64, 7), (64, 64, 7)]  # (C, O, H=W)


class ChannelsLast:
    """3x3 conv, padding 1, stride 1, no bias, forward only, through a (P, 9C) im2col."""

    def __init__(self, weight, hw, n, rows):
        self.o, self.c = weight.shape[:2]
        self.hw, self.rows, self.weight = hw, rows, weight
        dt = weight.dtype
        self.xp = np.zeros((hw + 2, n, hw + 2, self.c), dt)  # the border stays 0
        self.col = np.empty((hw, n, hw, 3, 3 * self.c), dt)
        self.yT = np.empty((hw, n, hw, self.o), dt)
        self.y = np.empty((self.o, hw, hw, n), dt)

    def transpose_in(self, x):
        """x (C, H, W, N) -> the interior of xp (H, N, W, C)"""
        h = self.hw
        np.copyto(self.xp[1:h + 1, :, 1:h + 1], x.transpose(1, 3, 2, 0))

    def forward(self, x):
        c, h, o, xp = self.c, self.hw, self.o, self.xp
        n = x.shape[-1]
        self.transpose_in(x)
        WT = self.weight.transpose(2, 3, 1, 0).reshape(9 * c, o)  # [(i, j, c), o]
        s, e = xp.strides, xp.itemsize
        for h0 in range(0, h, self.rows):
            r = min(self.rows, h - h0)
            taps = as_strided(xp[h0:], (r, n, h, 3, 3 * c), (s[0], s[1], c * e, s[0], e),
                              writeable=False)  # [h, n, w, i, (j, c)]
            block = self.col[h0:h0 + r]
            np.copyto(block, taps)
            np.matmul(block.reshape(-1, 9 * c), WT, out=self.yT[h0:h0 + r].reshape(-1, o))
        np.copyto(self.y, self.yT.transpose(3, 0, 2, 1))  # (H, N, W, O) -> (O, H, W, N)
        return self.y


def netspec_conv(c, o, hw, dtype):
    layer = LAYERS["conv2d"].model_validate(
        {"type": "conv2d", "out_channels": o, "kernel_size": 3, "padding": 1, "bias": False})
    plan = layer_plan(layer, (c, hw, hw), dtype=dtype, seed=0)
    return plan.params[f"{plan.steps[0].name}.weight"], plan.steps[0]


def interleaved(fns, repeats):
    """Median ms of each fn, run in rotating order."""
    times = [[] for _ in fns]
    for f in fns:
        f()
    for r in range(repeats):
        for k in [(r + i) % len(fns) for i in range(len(fns))]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return [float(np.median(t) * 1e3) for t in times]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4],
                    help="output rows per im2col + GEMM block")
    args = ap.parse_args(argv)
    n = args.batch
    for c, o, hw in SHAPES:  # float64 check first
        weight, step = netspec_conv(c, o, hw, "float64")
        x = np.random.default_rng(1).standard_normal((c, hw, hw, n))
        ref = step.forward(x, True)
        err = np.abs(ChannelsLast(weight, hw, n, 2).forward(x) - ref).max() / np.abs(ref).max()
        if not err <= 1e-10:
            print(f"FAIL: channels-last y differs by {err:.1e} for {c}->{o} @{hw}", file=sys.stderr)
            return 1
    with threadpool_limits(limits=args.threads, user_api="blas"):
        blas = [f"{p['internal_api']} {p['version']} {p.get('architecture')} "
                f"threads={p['num_threads']}" for p in threadpool_info()
                if p.get("user_api") == "blas"]
        print("BLAS:", ", ".join(blas), f"| batch {n}, medians of {args.repeats}, ms")
        for c, o, hw in SHAPES:
            weight, step = netspec_conv(c, o, hw, "float32")
            x = np.random.default_rng(2).standard_normal((c, hw, hw, n)).astype(np.float32)
            probes = [ChannelsLast(weight, hw, n, r) for r in args.rows]
            fns = [lambda s=step, x=x: s.forward(x, True)]
            fns += [lambda p=p, x=x: p.forward(x) for p in probes]
            fns.append(lambda p=probes[0], x=x: p.transpose_in(x))
            ms = interleaved(fns, args.repeats)
            cells = " ".join(f"rows {r}: {m:6.2f} ({m / ms[0]:.2f})"
                             for r, m in zip(args.rows, ms[1:-1]))
            print(f"{c:>3}->{o:<3} @{hw:>2}x{hw:<2} netspec fwd {ms[0]:6.2f} | channels-last "
                  f"{cells} | transpose-in alone {ms[-1]:5.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
