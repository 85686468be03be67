"""Decode throughput of the image cache, and the time of a load that hits the cache.

    python benchmarks/decode_cache.py /tmp/netspec-same-pixels/png   # an image folder
    python benchmarks/decode_cache.py DIR --repeats 5 --workers 1 2 --resize bilinear --size 32

For each worker count, repeats alternate a cold load (an empty cache: every file's header is
read, then every file decoded into the memory-mapped cache, `netspec.data.load_dataset` as
`netspec train` calls it) and a warm load (the same call again: the files are listed and
stat'ed, the cache entry found and mapped). It prints medians [min, max] of each, and the cold
load's images per second. The cache lives in a temporary $XDG_CACHE_HOME, emptied before every
cold load; the OS page cache is not dropped, so cold means "not decoded", not "not read from
disk". benchmarks/same_pixels.py writes MNIST as such a folder (70,000 PNG files of 28x28).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[0], help="0: one per core")
    p.add_argument("--resize", default="none")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--color", default="auto")
    args = p.parse_args(argv)
    cache = Path(tempfile.mkdtemp(prefix="netspec-decode-"))
    os.environ["XDG_CACHE_HOME"] = str(cache)
    from netspec.data import LoadOptions, load_dataset

    channels = 3 if args.color == "rgb" else 1
    try:
        for workers in args.workers:
            options = LoadOptions(input_shape=(channels, args.size, args.size),
                                  resize=args.resize, color=args.color, workers=workers)
            cold, warm, n = [], [], 0
            for _ in range(args.repeats):
                shutil.rmtree(cache / "netspec", ignore_errors=True)
                start = time.perf_counter()
                ds = load_dataset(args.folder, options=options)
                cold.append(time.perf_counter() - start)
                start = time.perf_counter()
                ds = load_dataset(args.folder, options=options)
                warm.append(time.perf_counter() - start)
                n = len(ds.train) + len(ds.test)
            med = statistics.median(cold)
            print(f"workers {workers or 'auto'}: {n:,} images {ds.input_shape}; cold load "
                  f"{med:.2f} s [{min(cold):.2f}, {max(cold):.2f}] = {n / med:,.0f} images/s; "
                  f"cached load {statistics.median(warm):.3f} s [{min(warm):.3f}, "
                  f"{max(warm):.3f}]; load average {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
