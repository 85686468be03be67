"""Time eval-mode forward passes at several chunk sizes (Plan.eval_chunk), interleaved.

Plan.run_forward splits a large eval batch into chunks of about `eval_chunk` samples (see
netspec/plan/compiler.py: EVAL_BYTES and MIN_EVAL_CHUNK). This script builds each spec's plan once, then
times plan.forward on a batch of random inputs with every chunk size in turn, rotating the
order between repeats, and prints the medians (ms) and each one's ratio to the plan's own
choice ("auto").

    python benchmarks/eval_chunk.py --threads 1 --repeats 9 --chunks 9 25 50 100 125 250
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from netspec.plan import compiler as plans
from netspec.spec.model import load

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--specs", nargs="+", default=["specs/record.yaml",
                   "benchmarks/specs/vgg-bn.yaml", "specs/lenet.yaml", "specs/resnet-mini.yaml",
                   "specs/mlp.yaml"])
    p.add_argument("--batch", type=int, default=1000, help="samples per forward (default 1000)")
    p.add_argument("--chunks", type=int, nargs="+", default=[9, 25, 50, 100, 125, 250])
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (worker processes: 1)")
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args(argv)
    with threadpool_limits(args.threads, user_api="blas"):
        for name in args.specs:
            plan = plans.compile(load(ROOT / name), "float32")
            x = np.random.default_rng(0).standard_normal((args.batch, *plan.in_shape))
            x = x.astype(np.float32)
            auto = plan.eval_chunk
            sizes = {"auto": auto} | {str(c): c for c in args.chunks}
            times = {k: [] for k in sizes}
            for r in range(args.repeats):
                keys = list(sizes)
                for k in keys[r % len(keys):] + keys[:r % len(keys)]:  # rotate the order
                    plan.eval_chunk = sizes[k]
                    t = time.perf_counter()
                    plan.forward(x, False)
                    times[k].append(time.perf_counter() - t)
            base = statistics.median(times["auto"])
            cells = [f"{k}{'=' + str(auto) if k == 'auto' else ''} "
                     f"{statistics.median(v) * 1e3:.1f} ({statistics.median(v) / base:.2f})"
                     for k, v in times.items()]
            print(f"{name} [{args.threads} thread(s), batch {args.batch}]: " + "  ".join(cells),
                  flush=True)


if __name__ == "__main__":
    main()
