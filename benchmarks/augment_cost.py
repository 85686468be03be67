"""The cost of augmentation against a training step, in one process (augmentation runs inside
each worker, on its slice, so the ratio holds for any worker count).

    python benchmarks/augment_cost.py                      # lenet (batch 64) and cifar10-resnet
    python benchmarks/augment_cost.py --specs lenet --steps 200 --repeats 7

For each spec it times `slice_gradient` (gather, forward, loss, backward: the step of
`netspec train` without the optimizer) on random normalised batches without augmentation, and
the augmentation alone on the same batches (it is one call inside the step, added to it), each
step and each call timed on its own, interleaved, and prints the medians over all of them
(robust to the spikes a loaded machine gives) and the augmentation's share: augmentation /
step. The settings: the spec's own `data.augment` if it has one, crop with 2 (MNIST) or 4
(CIFAR) pixels of padding + flip, a ±2 pixel shift, a ±10 degree rotation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def settings(spec, pad: int) -> dict:
    from netspec.spec.data import AugmentSpec

    out = {}
    if spec.data.augment is not None:
        out["the spec's"] = spec.data.augment
    out[f"crop {pad} + flip"] = AugmentSpec(crop={"padding": pad}, horizontal_flip=0.5)
    out["shift 2"] = AugmentSpec(translate={"pixels": 2})
    out["rotate 10"] = AugmentSpec(rotate={"degrees": 10})
    return out


def time_steps(plan, spec, x, y, rows, rng, augmenters: dict, steps: int, times: dict):
    """Time `steps` slice_gradient steps without augmentation and, on each step's batch, each
    augmenter alone; append the seconds of each to times[name] ("none": the step)."""
    from netspec.train.pool import slice_gradient

    plan.augment = None
    for step in range(steps):
        plan.noise.step = step
        idx = rng.integers(0, len(x), len(rows))
        start = time.perf_counter()
        slice_gradient(plan, spec.loss, x, y, idx, rows)
        times["none"].append(time.perf_counter() - start)
        batch = x[idx]
        for name, augmenter in augmenters.items():
            start = time.perf_counter()
            augmenter(batch, idx, step)
            times[name].append(time.perf_counter() - start)


def main(argv=None) -> int:
    import netspec
    from netspec.data.augment import Augmenter

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--specs", nargs="+", default=["lenet", "cifar10-resnet"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    for name in args.specs:
        spec = netspec.load(ROOT / "specs" / f"{name}.yaml")
        plan = netspec.compile(spec)
        batch = spec.train.batch_size
        shape = tuple(spec.input.shape)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4096, int(np.prod(shape)))).astype(np.float32)
        y = rng.integers(0, 10, 4096)
        rows = np.empty((batch, x.shape[1]), np.float32)
        augmenters = {k: Augmenter(a, shape, 0, 64)
                      for k, a in settings(spec, 4 if shape[1] == 32 else 2).items()}
        times = {k: [] for k in ("none", *augmenters)}
        time_steps(plan, spec, x, y, rows, rng, augmenters, 3, {k: [] for k in times})  # warm
        for _ in range(args.repeats):
            time_steps(plan, spec, x, y, rows, rng, augmenters, args.steps, times)
        base = statistics.median(times["none"])
        print(f"{name}: batch {batch}, {args.steps * args.repeats} steps, one process; "
              f"load average {os.getloadavg()[0]:.2f}; medians [25th, 75th percentile]")
        for k, t in times.items():
            q1, med, q3 = np.percentile(t, [25, 50, 75])
            what = "step (no augmentation)" if k == "none" else f"{k}: augmentation alone"
            share = "" if k == "none" else f"  = {100 * med / base:.1f}% of the step"
            print(f"  {what:<34} {1e3 * med:8.3f} ms [{1e3 * q1:.3f}, {1e3 * q3:.3f}]{share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
