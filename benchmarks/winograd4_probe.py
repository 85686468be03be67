"""Time Winograd F(4x4, 3x3) (netspec/winograd4.py) against conv2d's other training paths.

A measurement for issue 11. F(4x4, 3x3) multiplies 36 K C per 16 outputs (4x fewer than
im2col's 9 K C per output, against F(2x2)'s 2.25x), which could pay for the 7x7 convs, where
F(2x2) does not (it computes 8x8 outputs for 7x7) and the GEMMs already run near OpenBLAS's
peak. Its transforms are applied separably, as GEMMs with the 6x6 (or 4x6) matrices along one
tile axis at a time (np.matmul broadcasting them over the other axis), instead of the
elementwise passes of netspec/winograd.py:

    D = 6x6 tiles of the padded input at stride 4 (one strided copy)        (6, 6, C, T)
    V = B^T D B,  U = G g G^T,  M = U @ V (36 batched GEMMs),  y tiles = A^T M A  (4, 4, K, T)
  backward: dM = A dY A^T, dU = dM V^T, dW = G^T dU G, dV = U^T dM, dx = sum of tiles B dV B^T

It times netspec.winograd4.Winograd4's forward + backward in float32 on one BLAS thread against
conv2d's training path built without it (Winograd F(2x2) from 12 pixels a side, im2col below),
alternating, medians of --repeats, with the float32 errors relative to that path. (Its
correctness against im2col in float64 is tests/test_winograd4.py's.)

    PYTHONPATH=$PWD python benchmarks/winograd4_probe.py --batches 64 32
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from netspec import blas, winograd4
from netspec.layers.base import Workspace
from netspec.layers.conv2d import Conv2d
from netspec.plan import layer_plan, ufunc_buffer

SHAPES = [(32, 64, 7), (64, 64, 7), (16, 32, 14), (32, 32, 14), (16, 16, 28)]  # vgg-bn's


def conv_step(c, k, hw, dtype):
    """conv2d's step for (C, hw, hw) -> (K, hw, hw), built without the F(4x4) path."""
    layer = Conv2d(type="conv2d", out_channels=k, kernel_size=3, padding=1, bias=False)
    sizes, winograd4.SIZES = winograd4.SIZES, (1, 0)  # read when the layer is built
    try:
        return layer_plan(layer, (c, hw, hw), dtype=dtype).steps[0]
    finally:
        winograd4.SIZES = sizes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 32])
    p.add_argument("--repeats", type=int, default=11)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    with threadpool_limits(1, user_api="blas"), ufunc_buffer():
        blas.THREADS = 1  # conv2d's worker-process path
        for n in args.batches:
            for c, k, hw in SHAPES:
                x = rng.standard_normal((c, hw, hw, n)).astype(np.float32)
                dy = rng.standard_normal((k, hw, hw, n)).astype(np.float32)
                step = conv_step(c, k, hw, "float32")
                f4 = winograd4.Winograd4(c, k, hw, hw, Workspace(np.float32))
                dw = np.empty((k, c, 3, 3), np.float32)
                w = step.ctx.params["weight"]
                t0, t1 = [], []
                for r in range(args.repeats):
                    for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                        t = time.perf_counter()
                        if which == 0:
                            step.forward(x, True)
                            step.backward(dy.copy())
                        else:
                            f4.forward(x, w)
                            f4.backward(dy, dw)
                        (t0 if which == 0 else t1).append(time.perf_counter() - t)
                y0, dx0 = step.forward(x, True).copy(), step.backward(dy.copy()).copy()
                y1 = f4.forward(x, w).copy()
                dx1 = f4.backward(dy, dw)

                def rel(a, b):
                    return float(abs(a - b).max() / abs(b).max())

                a, b = statistics.median(t0), statistics.median(t1)
                print(f"{c}->{k} @{hw}x{hw}, N={n}: conv2d {a * 1e3:.2f} ms, F(4x4) "
                      f"{b * 1e3:.2f} ms, ratio {b / a:.2f}; float32 error y "
                      f"{rel(y1, y0):.0e}, dx {rel(dx1, dx0):.0e}, "
                      f"dW {rel(dw, step.ctx.grads['weight']):.0e}", flush=True)


if __name__ == "__main__":
    main()
