"""Time workers' training steps with the workspace on huge pages (netspec/kernels/pages.py) and without.

For each spec, two plans are built from the same seed, one with pages.HUGE_MIN as shipped and
one with it out of reach (every array from np.empty), and their arrays are allocated by two
untimed steps. Each repeat then times `--steps` training steps of each (forward, loss,
backward, the spec's optimizer: `netspec.plan.bench.time_layers`), alternating which goes first, on
one BLAS thread and one worker's share of the batch, as `netspec train` runs on 2 cores.
Prints medians (ms), the ratio, and how much of this process is on huge pages. The plan built
first can be faster for reasons of its own (on the 2-core test machine LeNet, which has no
array big enough for huge pages, measured 0.85-0.97 between two identical plans), so run it in
both orders:

    python benchmarks/pages_probe.py --repeats 9
    python benchmarks/pages_probe.py --repeats 9 --plain-first
"""

import argparse
import os
import statistics
from pathlib import Path

import numpy as np

from netspec.kernels import blas, pages
from netspec.plan.bench import time_layers
from netspec.plan.compiler import compile
from netspec.spec.model import load

ROOT = Path(__file__).resolve().parent.parent


def huge_kib() -> str:
    """AnonHugePages of this process (Linux), e.g. '174080 kB'."""
    try:
        text = Path(f"/proc/{os.getpid()}/smaps_rollup").read_text()
    except OSError:
        return "n/a"
    return text.split("AnonHugePages:")[1].split("\n")[0].strip()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--specs", nargs="+", default=["specs/record.yaml",
                   "benchmarks/specs/vgg-bn.yaml", "specs/lenet.yaml"])
    p.add_argument("--steps", type=int, default=8, help="timed training steps per repeat")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--plain-first", action="store_true", help="build the plain plan first")
    args = p.parse_args(argv)
    shipped = pages.HUGE_MIN
    with blas.limit(1):
        for name in args.specs:
            spec = load(ROOT / name if not Path(name).exists() else name)
            batch = max(1, spec.train.batch_size // 2)  # one of two workers' share
            plans = {}
            builds = [("huge", shipped), ("plain", 1 << 62)]
            for mode, threshold in (builds[::-1] if args.plain_first else builds):
                pages.HUGE_MIN = threshold
                plans[mode] = compile(spec, "float32")
                time_layers(plans[mode], batch, 2, np.random.default_rng(0), loss=spec.loss)
            pages.HUGE_MIN = shipped
            times = {mode: [] for mode in plans}
            for r in range(args.repeats):
                for mode in (("huge", "plain") if r % 2 == 0 else ("plain", "huge")):
                    report = time_layers(plans[mode], batch, args.steps, np.random.default_rng(r),
                                         loss=spec.loss, optimizer=spec.train.optimizer)
                    times[mode].append(report.step_ms)
            h, q = (statistics.median(times[m]) for m in ("huge", "plain"))
            print(f"{spec.name}: {batch} samples, 1 BLAS thread, {args.repeats} repeats: huge "
                  f"pages {h:.2f} ms, plain {q:.2f} ms, ratio {h / q:.3f} (process on huge "
                  f"pages so far: {huge_kib()})", flush=True)


if __name__ == "__main__":
    main()
