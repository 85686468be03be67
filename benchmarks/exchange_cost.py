"""What batchnorm's statistics exchange costs when worker processes share a batch.

Usage (from the repository root):

    python benchmarks/exchange_cost.py                         # vgg-bn, batch 128, 3 rounds
    python benchmarks/exchange_cost.py --spec specs/record.yaml --steps 20 --rounds 5

Each round times, interleaved, the median step (forward, loss, backward, gradient sum; no
optimizer) of three set-ups on random inputs:
* 2 workers with the exchange (what `netspec train` runs), and the time the main process spends
  inside the gathers (its own transfer plus waiting for the slower worker), once for each way
  of waiting in `--waits` (spin: on shared memory, netspec's default on x86; pipe: a pipe round
  trip per gather, the default elsewhere);
* 2 workers with batchnorm's `couples_batch` switched off, so that each worker normalises with
  its own slice's statistics: the same arithmetic without the exchange (wrong statistics);
* one process.
The BLAS library and kernel (threadpoolctl) and the load average are printed with the results.
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default=str(ROOT / "benchmarks" / "specs" / "vgg-bn.yaml"))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=12, help="timed steps per set-up and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--waits", nargs="+", choices=["spin", "pipe"], default=["spin", "pipe"])
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from threadpoolctl import threadpool_info

    import netspec
    from netspec.nn.layers.batchnorm import BatchNorm
    from netspec.train import exchange as xch
    from netspec.train.pool import WorkerPool, slice_gradient

    spec = netspec.load(args.spec)
    rng = np.random.default_rng(0)
    d = int(np.prod(spec.input.shape))
    x = rng.normal(size=(4096, d)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    batch = args.batch_size

    def pool_steps(exchange: bool, wait: str = "spin") -> tuple[float, float]:
        default = xch.SPIN
        BatchNorm.couples_batch, xch.SPIN = exchange, wait == "spin"
        try:
            plan = netspec.compile(spec, "float32")
            pool = WorkerPool(plan, spec.loss, x, y, 2, batch)
        finally:
            BatchNorm.couples_batch, xch.SPIN = True, default
        waits = []
        if pool.exchange is not None:
            gather = pool.exchange.gather

            def timed(vec):
                t = time.perf_counter()
                out = gather(vec)
                waits.append(time.perf_counter() - t)
                return out

            pool.exchange.gather = timed
        times = []
        with pool.blas_limit():
            for _ in range(args.steps + 2):  # 2 warm-up steps
                idx = rng.permutation(len(x))[:batch]
                t = time.perf_counter()
                pool.gradient(idx)
                times.append(time.perf_counter() - t)
        pool.close()
        return statistics.median(times[2:]), sum(waits) / (args.steps + 2)

    def one_process() -> float:
        plan = netspec.compile(spec, "float32")
        rows = np.empty((batch, d), np.float32)
        times = []
        for _ in range(args.steps + 2):
            idx = rng.permutation(len(x))[:batch]
            t = time.perf_counter()
            slice_gradient(plan, spec.loss, x, y, idx, rows)
            times.append(time.perf_counter() - t)
        return statistics.median(times[2:])

    blas = [(i["internal_api"], i.get("version"), i.get("architecture"))
            for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"{spec.name}, batch {batch}, BLAS {blas}, load average {os.getloadavg()[0]:.1f}")
    for r in range(args.rounds):
        waits = args.waits[r % len(args.waits):] + args.waits[:r % len(args.waits)]  # rotate
        results = {wait: pool_steps(True, wait) for wait in waits}
        without, _ = pool_steps(False)
        one = one_process()
        cells = [f"{wait} {t * 1e3:.1f} ms/step (main process in gathers {w * 1e3:.1f} ms, "
                 f"ratio {t / without:.2f})" for wait, (t, w) in sorted(results.items())]
        print(f"round {r + 1}: 2 workers with exchange: {'; '.join(cells)}; without "
              f"{without * 1e3:.1f} ms; one process {one * 1e3:.1f} ms", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
