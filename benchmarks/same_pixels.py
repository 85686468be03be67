"""The same pixels give the same run, on the full MNIST: the 70,000 images written out as PNG
class folders train to the same metrics.jsonl (every loss and accuracy, bit for bit) as the
same images in IDX files in the same order: class by class, and by file name within a class.

    python benchmarks/same_pixels.py --data-dir DIR                   # specs/lenet.yaml, 1 epoch
    python benchmarks/same_pixels.py --data-dir DIR --spec specs/record.yaml --set train.epochs=2

It writes WORK/png/{train,test}/<digit>/<index>.png and WORK/idx/ (the four IDX files, images
in that order), then runs `netspec train SPEC --set data.dataset=...` on each with the same
seed and workers, into WORK/run-png and WORK/run-idx, and compares their metrics.jsonl without
the timing fields. The PNG run's first load decodes the 70,000 files into the decode cache;
benchmarks/decode_cache.py times that. tests/test_same_pixels.py is the same check on the
small fixture.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TIMING = ("train_seconds", "eval_seconds", "images_per_second")


def write_png_and_idx(work: Path, data_dir) -> None:
    """WORK/png and WORK/idx from MNIST, in class order (skipped when already written)."""
    from PIL import Image

    from netspec.data import load_dataset
    from netspec.data.known import FILES

    if (work / "idx" / f"{FILES[-1]}.gz").exists():
        return
    ds = load_dataset("mnist", data_dir=data_dir, download_missing=False)
    arrays = []
    start = time.perf_counter()
    for split, part in (("train", ds.train), ("test", ds.test)):
        order = np.argsort(part.labels, kind="stable")
        for digit in range(10):
            (work / "png" / split / str(digit)).mkdir(parents=True, exist_ok=True)
        for i in order:
            Image.fromarray(part.images[i]).save(
                work / "png" / split / str(part.labels[i]) / f"{i:05d}.png")
        arrays += [part.images[order], part.labels[order]]
    (work / "idx").mkdir(exist_ok=True)
    for name, array in zip(FILES, arrays):
        header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
        (work / "idx" / f"{name}.gz").write_bytes(
            gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0))
    print(f"wrote 70,000 PNG files and the IDX files in {time.perf_counter() - start:.0f} s")


def metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in path.read_text().splitlines()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("NETSPEC_DATA"))
    p.add_argument("--spec", default=str(ROOT / "specs" / "lenet.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=["train.epochs=1"])
    p.add_argument("--workers", default="auto")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "netspec-same-pixels"))
    args = p.parse_args(argv)
    work = Path(args.work)
    write_png_and_idx(work, args.data_dir)
    runs = {}
    for kind in ("png", "idx"):
        out = work / f"run-{kind}-{time.strftime('%H%M%S')}"
        cmd = [sys.executable, "-m", "netspec", "train", args.spec, "--out", str(out),
               "--workers", str(args.workers), "--no-progress", "--set",
               f"data.dataset={work / kind}", *[a for o in args.overrides for a in ("--set", o)]]
        print("$", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        print(f"{kind}: {time.perf_counter() - start:.1f} s in all")
        runs[kind] = metrics(out / "metrics.jsonl")
    same = runs["png"] == runs["idx"]
    for a, b in zip(runs["png"], runs["idx"]):
        print(f"epoch {a['epoch']}: png test_acc {a.get('test_acc')!r} loss {a.get('test_loss')!r}"
              f" | idx test_acc {b.get('test_acc')!r} loss {b.get('test_loss')!r}")
    print("metrics.jsonl (without timing): " + ("IDENTICAL" if same else "DIFFERENT"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
