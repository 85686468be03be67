"""Train steps of whole nets with and without conv2d's Winograd path, interleaved.

A measurement for issue 11. bench_vs_torch.py compares netspec with PyTorch; on a loaded
machine PyTorch's threads suffer far more than netspec's processes, so its ratios say little
about a change of a few % in netspec. This script times netspec against itself in one process:
two trainers of the same spec (same weights, data and batches), one built with
conv2d.WINOGRAD = False (main's paths) and one with True, each with its worker processes
(`--workers`, default auto: 2 on 2 cores, one BLAS thread each, where Winograd is used). Each
repeat trains both from their initial state for the same steps, alternating which goes first;
the table shows medians and the paired ratios Winograd / without.

    PYTHONPATH=$PWD python benchmarks/winograd_net.py --data-dir /work/shared/data/mnist \
        --specs benchmarks/specs/vgg-bn.yaml record --steps 40 --repeats 7 \
        --json benchmarks/results/winograd-net-2026-11-30.json
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_torch import NetspecSide, load_data, spec_path, workers_arg

import netspec
from netspec.fsio import atomic_write
from netspec.nn.layers import conv2d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("NETSPEC_DATA"))
    ap.add_argument("--specs", nargs="+", default=["benchmarks/specs/vgg-bn.yaml", "record"])
    ap.add_argument("--steps", type=int, default=40, help="training steps per timed run")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--workers", type=workers_arg, default="auto")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()
    print(f"load average at start: {load_start}", flush=True)
    results = []
    for name in args.specs:
        spec = netspec.load(spec_path(name))
        x, y = load_data(args.data_dir, spec.data.normalize)
        sides = {}
        for wino in (False, True):  # the flag is read when the plan is built
            conv2d.WINOGRAD = wino
            sides[wino] = NetspecSide(spec, x, y, args.workers)
            sides[wino].reset()
        conv2d.WINOGRAD = True
        for side in sides.values():  # warm-up
            side.train(min(args.steps, 10))
        times = {False: [], True: []}
        for r in range(args.repeats):
            for wino in ((False, True) if r % 2 == 0 else (True, False)):
                sides[wino].reset()
                times[wino].append(sides[wino].train(args.steps))
        for side in sides.values():
            side.trainer.close()
        paired = [b / a for a, b in zip(times[False], times[True])]
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"spec": spec.name, "steps": args.steps, "batch": spec.train.batch_size,
               "workers": sides[True].trainer.workers, "seconds_without": times[False],
               "seconds_winograd": times[True], "ratio_of_medians": med[True] / med[False],
               "paired_ratios": paired, "median_paired_ratio": statistics.median(paired)}
        results.append(row)
        print(f"{spec.name:8} {args.steps} steps of {spec.train.batch_size}, "
              f"{row['workers']} workers: without {med[False]:.3f} s, Winograd {med[True]:.3f} s,"
              f" ratio {row['ratio_of_medians']:.3f} (paired {min(paired):.3f}-"
              f"{max(paired):.3f}, median {row['median_paired_ratio']:.3f})", flush=True)
    load_end = os.getloadavg()
    print(f"load average at end: {load_end}")
    if args.json:
        out = {"repeats": args.repeats, "loadavg_start": load_start, "loadavg_end": load_end,
               "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "rows": results}
        atomic_write(args.json, json.dumps(out, indent=1))
    return 0 if all(math.isfinite(r["ratio_of_medians"]) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
