"""Time conv2d's Winograd F(4x4, 3x3) training path (netspec/kernels/winograd.py) against the im2col
paths and against the F(2x2, 3x3) path it replaced (benchmarks/winograd2_ref.py).

A measurement for issue 11. For each 3x3 conv of benchmarks/specs/vgg-bn.yaml (padding 1, stride
1, no bias) it times forward(train=True) + backward in float32 on ONE BLAS thread (the worker
processes' setting), alternating the variants between repeats, and prints medians and the
ratios of F(4x4) to each:

    im2col  conv2d's step built without Winograd (conv2d.WINOGRAD = False): im2col, or the
            row-stacked GEMM at 28x28
    F(2x2)  benchmarks/winograd2_ref.py, the elementwise-transform path used until 2026-11-30
    F(4x4)  netspec.kernels.winograd.Winograd: GEMM transforms, one row of tiles at a time

with F(4x4)'s float32 errors relative to im2col. (Its correctness against im2col in float64 is
tests/test_winograd.py's.)

    PYTHONPATH=$PWD python benchmarks/winograd4_probe.py --batches 64 32 --repeats 15
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import winograd2_ref

from netspec.kernels import winograd
from netspec.nn.layers import conv2d
from netspec.nn.layers.base import Workspace
from netspec.nn.layers.conv2d import Conv2d
from netspec.plan.compiler import layer_plan, ufunc_buffer

SHAPES = [(32, 64, 7), (64, 64, 7), (16, 32, 14), (32, 32, 14), (16, 16, 28)]  # vgg-bn's


def im2col_step(c, k, hw):
    """conv2d's step for (C, hw, hw) -> (K, hw, hw), built without the Winograd path."""
    layer = Conv2d(type="conv2d", out_channels=k, kernel_size=3, padding=1, bias=False)
    conv2d.WINOGRAD = False  # read when the layer is built
    try:
        return layer_plan(layer, (c, hw, hw), dtype="float32").steps[0]
    finally:
        conv2d.WINOGRAD = True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 32])
    p.add_argument("--repeats", type=int, default=11)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    with threadpool_limits(1, user_api="blas"), ufunc_buffer():
        for n in args.batches:
            for c, k, hw in SHAPES:
                x = rng.standard_normal((c, hw, hw, n)).astype(np.float32)
                dy = rng.standard_normal((k, hw, hw, n)).astype(np.float32)
                step = im2col_step(c, k, hw)
                w = step.ctx.params["weight"]
                dw = np.empty((k, c, 3, 3), np.float32)
                paths = {"im2col": None,
                         "F(2x2)": winograd2_ref.Winograd(c, k, hw, hw, Workspace(np.float32)),
                         "F(4x4)": winograd.Winograd(c, k, hw, hw, Workspace(np.float32))}
                times = {name: [] for name in paths}
                for r in range(args.repeats):
                    names = list(paths)
                    for name in names[r % 3:] + names[:r % 3]:  # rotate who goes first
                        t = time.perf_counter()
                        if paths[name] is None:
                            step.forward(x, True)
                            step.backward(dy.copy())
                        else:
                            paths[name].forward(x, w)
                            paths[name].backward(dy, dw)
                        times[name].append(time.perf_counter() - t)
                y0, dx0 = step.forward(x, True).copy(), step.backward(dy.copy()).copy()
                y1 = paths["F(4x4)"].forward(x, w).copy()
                dx1 = paths["F(4x4)"].backward(dy, dw)

                def rel(a, b):
                    return float(abs(a - b).max() / abs(b).max())

                med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
                print(f"{c}->{k} @{hw}x{hw}, N={n}: im2col {med['im2col']:.2f} ms, F(2x2) "
                      f"{med['F(2x2)']:.2f}, F(4x4) {med['F(4x4)']:.2f}; F(4x4) / im2col "
                      f"{med['F(4x4)'] / med['im2col']:.2f}, / F(2x2) "
                      f"{med['F(4x4)'] / med['F(2x2)']:.2f}; float32 error y {rel(y1, y0):.0e},"
                      f" dx {rel(dx1, dx0):.0e}, dW {rel(dw, step.ctx.grads['weight']):.0e}",
                      flush=True)


if __name__ == "__main__":
    main()
