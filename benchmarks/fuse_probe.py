"""Time training steps and eval passes with and without the conv + average-pool fusion
(netspec/plan/fuse.py), interleaved.

For each spec, a fused and an unfused plan are built from the same seed (fuse.FUSE toggled
while compiling). Each repeat times `--steps` training steps of each plan on the same random
batch (forward, loss, backward, the spec's optimizer: `netspec.plan.bench.time_layers`), then one
eval pass over `--eval` images, alternating which plan goes first. Prints medians (ms) and the
ratio fused / unfused. Default: LeNet at one worker's share of its batch (32 of 64) on one BLAS
thread, as `netspec train` runs it on 2 cores.

    python benchmarks/fuse_probe.py --repeats 9
    python benchmarks/fuse_probe.py --batch 64 --threads 2      # one process, the whole batch
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from netspec.kernels import blas
from netspec.plan import fuse
from netspec.plan.bench import time_layers
from netspec.plan.compiler import compile
from netspec.spec.model import load

ROOT = Path(__file__).resolve().parent.parent


def build(spec, fused: bool):
    old, fuse.FUSE = fuse.FUSE, fused
    try:
        return compile(spec, "float32")
    finally:
        fuse.FUSE = old


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--specs", nargs="+", default=["specs/lenet.yaml"])
    p.add_argument("--batch", type=int, default=32, help="samples per training step")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (worker processes: 1)")
    p.add_argument("--steps", type=int, default=50, help="timed training steps per repeat")
    p.add_argument("--eval", type=int, default=1000, help="images per eval pass")
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args(argv)
    with blas.limit(args.threads):
        for name in args.specs:
            spec = load(ROOT / name if not Path(name).exists() else name)
            plans = {"fused": build(spec, True), "unfused": build(spec, False)}
            if not plans["fused"].fused:
                print(f"{spec.name}: nothing to fuse")
                continue
            x = np.random.default_rng(0).standard_normal((args.eval, *spec.input.shape))
            x = x.astype(np.float32)
            times = {(k, phase): [] for k in plans for phase in ("train", "eval")}
            for r in range(args.repeats):
                for k in (("fused", "unfused") if r % 2 == 0 else ("unfused", "fused")):
                    plan = plans[k]
                    report = time_layers(plan, args.batch, args.steps, np.random.default_rng(r),
                                         loss=spec.loss, optimizer=spec.train.optimizer)
                    times[k, "train"].append(report.step_ms)
                    start = time.perf_counter()
                    plan.forward(x)
                    times[k, "eval"].append((time.perf_counter() - start) * 1e3)
            print(f"{spec.name}: fused {plans['fused'].fused}; batch {args.batch}, "
                  f"{args.threads} BLAS thread(s), {args.repeats} repeats, medians in ms")
            evals = f"eval, {args.eval} images"
            for phase, what in (("train", "training step"), ("eval", evals)):
                f, u = (statistics.median(times[k, phase]) for k in ("fused", "unfused"))
                print(f"  {what:22s} fused {f:8.3f}  unfused {u:8.3f}  ratio {f / u:.2f}")


if __name__ == "__main__":
    main()
