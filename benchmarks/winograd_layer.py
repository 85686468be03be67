"""Time netspec's conv2d training step with its Winograd path against its im2col paths.

A measurement for issue 11 (the integrated form of benchmarks/winograd_probe.py): for each 3x3
conv of benchmarks/specs/vgg-bn.yaml (padding 1, stride 1, no bias) it builds netspec's layer
plan once per variant with the same weights and times forward(train=True) + backward, in
float32 with ONE BLAS thread, interleaved (rotating which variant goes first), and prints
medians and ratios to the im2col (or row-stacked) path:

    im2col    netspec.blas.THREADS = None: the path 1-process training takes
    wino tbR  netspec.blas.THREADS = 1 (as in the worker processes), R tile rows per block

The size and channel rules (netspec.winograd.MIN_SIZE, MIN_CHANNELS) are lifted
here so that every shape can be measured.

    PYTHONPATH=$PWD python benchmarks/winograd_layer.py --repeats 11 --tile-rows 1 2 7 \
        --json benchmarks/results/winograd-layer-2026-11-30.json
"""

import argparse
import json
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from netspec import blas, winograd
from netspec.fsio import atomic_write
from netspec.layers import LAYERS
from netspec.plan import layer_plan

# (C, K, H=W) of vgg-bn.yaml's convs
SHAPES = [(1, 16, 28), (16, 16, 28), (16, 32, 14), (32, 32, 14), (32, 64, 7), (64, 64, 7)]


def build(c, k, hw, tile_rows=None):
    """netspec's conv2d step for (C, hw, hw) -> (K, hw, hw), its Winograd in blocks of
    tile_rows tile rows (read when the layer is built)."""
    layer = LAYERS["conv2d"].model_validate(
        {"type": "conv2d", "out_channels": k, "kernel_size": 3, "padding": 1, "bias": False})
    default, winograd.TILE_ROWS = winograd.TILE_ROWS, tile_rows or winograd.TILE_ROWS
    try:
        return layer_plan(layer, (c, hw, hw), dtype="float32", seed=0).steps[0]
    finally:
        winograd.TILE_ROWS = default


def time_case(c, k, hw, n, repeats, tile_rows):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((c, hw, hw, n)).astype(np.float32)
    dy = rng.standard_normal((k, hw, hw, n)).astype(np.float32)
    variants = {"im2col": (build(c, k, hw), None)}
    for tb in tile_rows:
        variants[f"wino tb{tb}"] = (build(c, k, hw, tb), 1)
    T = {name: [] for name in variants}

    def run(name):
        step, threads = variants[name]
        blas.THREADS = threads
        t0 = time.perf_counter()
        step.forward(x, True)
        step.backward(dy, True)
        T[name].append(time.perf_counter() - t0)
        blas.THREADS = None

    names = list(variants)
    for name in names:  # warm-up: buffers allocated
        run(name)
    for name in names:
        T[name].clear()
    for i in range(repeats):
        for name in names[i % len(names):] + names[:i % len(names)]:
            run(name)
    med = {name: float(np.median(v) * 1e3) for name, v in T.items()}
    return {"C": c, "K": k, "HW": hw, "N": n, "median_ms": med,
            "ratio": {name: med[name] / med["im2col"] for name in names[1:]},
            "times_ms": {name: [t * 1e3 for t in v] for name, v in T.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--batches", type=int, nargs="+", default=[64])
    ap.add_argument("--tile-rows", type=int, nargs="+", default=[1, 2, 7])
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    winograd.MIN_SIZE, winograd.MIN_CHANNELS = 1, 1
    load_start = os.getloadavg()
    print(f"load average at start: {load_start}")
    rows = []
    with threadpool_limits(1, user_api="blas"):
        for n in args.batches:
            for c, k, hw in SHAPES:
                r = time_case(c, k, hw, n, args.repeats, args.tile_rows)
                ms = r["median_ms"]["im2col"]
                print(f"{c:>3}->{k:<3} @{hw:>2} N={n:<4} im2col {ms:7.2f} ms | "
                      + " ".join(f"{name} {v:.2f}" for name, v in r["ratio"].items()), flush=True)
                rows.append(r)
    load_end = os.getloadavg()
    print(f"load average at end: {load_end}\nratio: Winograd / im2col, medians of "
          f"{args.repeats} interleaved forward(train) + backward steps, 1 BLAS thread")
    if args.json:
        out = {"repeats": args.repeats, "dtype": "float32", "blas_threads": 1,
               "loadavg_start": load_start, "loadavg_end": load_end,
               "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
        atomic_write(args.json, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
