"""The cost of augmentation against a training step, in one process (augmentation runs inside
each worker, on its slice, so the ratio holds for any worker count).

    python benchmarks/augment_cost.py                      # lenet (batch 64) and cifar10-resnet
    python benchmarks/augment_cost.py --specs lenet --steps 200 --repeats 7

For each spec it times `slice_gradient` (gather, forward, loss, backward: the step of
`netspec train` without the optimizer) on random normalised batches, interleaving runs without
augmentation and with each setting below, and prints medians and the augmentation's share of
the step: (with - without) / without. The settings: the spec's own `data.augment` if it has
one, crop with 2 (MNIST) or 4 (CIFAR) pixels of padding + flip, a ±2 pixel shift, a ±10 degree
rotation.
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


def time_steps(plan, spec, x, y, rows, rng, augmenter, steps: int) -> float:
    """Seconds per slice_gradient step on random batches, with `augmenter` (or None)."""
    from netspec.train.pool import slice_gradient

    plan.augment = augmenter
    start = time.perf_counter()
    for step in range(steps):
        plan.noise.step = step
        idx = rng.integers(0, len(x), len(rows))
        slice_gradient(plan, spec.loss, x, y, idx, rows)
    return (time.perf_counter() - start) / steps


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
        options = {"none": None} | {k: Augmenter(a, shape, 0, 64)
                                    for k, a in settings(spec, 4 if shape[1] == 32 else 2).items()}
        times = {k: [] for k in options}

        for augmenter in options.values():
            time_steps(plan, spec, x, y, rows, rng, augmenter, args.steps)  # warm-up
        for r in range(args.repeats):
            keys = list(options) if r % 2 == 0 else list(reversed(options))
            for k in keys:
                times[k].append(time_steps(plan, spec, x, y, rows, rng, options[k],
                                           args.steps))
        base = statistics.median(times["none"])
        print(f"{name}: batch {batch}, {args.steps} steps x {args.repeats} repeats, one process; "
              f"load average {os.getloadavg()[0]:.2f}")
        for k, t in times.items():
            med = statistics.median(t)
            share = "" if k == "none" else f"  augmentation {100 * (med - base) / base:+.1f}% " \
                                             "of the step"
            print(f"  {k:<12} {1e3 * med:8.2f} ms/step [{1e3 * min(t):.2f}, {1e3 * max(t):.2f}]"
                  f"{share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
