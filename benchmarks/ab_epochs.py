"""Interleaved A/B of whole training epochs between two checkouts, with the noise beside it.

Each round trains one epoch of SPEC with `netspec train` from checkout A, from checkout B, and
from A again (the identical-plan control), in an order that alternates between rounds, and
records `train_seconds` from each run's metrics.jsonl. It prints each run, the medians, the
per-round ratios B / A and control A' / A, and their medians: B pays only if its ratio is
further from 1 than the control's.

    git worktree add /tmp/without <commit-without-the-change>
    python benchmarks/ab_epochs.py . /tmp/without --data-dir DIR --rounds 5
    python benchmarks/ab_epochs.py . /tmp/without --spec specs/cifar10-resnet.yaml \
        --set data.dataset=/tmp/cifar-shaped.npz                 # any data, through --set
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def train_seconds(tree: Path, spec: str, out: Path, args) -> tuple[float, float]:
    """One epoch of SPEC trained by the netspec of `tree`: (train_seconds, test_acc)."""
    cmd = [sys.executable, "-m", "netspec", "train", str(tree / spec), "--set",
           "train.epochs=1", "--workers", args.workers, "--no-progress", "--out", str(out)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    for override in args.set:
        cmd += ["--set", override]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return record["train_seconds"], record["test_acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="checkout A (the baseline, run twice a round)")
    parser.add_argument("b", type=Path, help="checkout B (the change)")
    parser.add_argument("--spec", default="specs/record.yaml", help="relative to each checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--data-dir", default=os.environ.get("NETSPEC_DATA"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a spec override for both checkouts (repeatable), e.g. "
                             "data.dataset=/tmp/cifar-shaped.npz")
    args = parser.parse_args()
    trees = {"A": args.a.resolve(), "B": args.b.resolve(), "A'": args.a.resolve()}
    times: dict[str, list[float]] = {label: [] for label in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ["A", "B", "A'"] if r % 2 == 0 else ["B", "A'", "A"]
            for label in order:
                out = Path(tmp) / f"{r}-{label.replace(chr(39), '2')}"
                seconds, acc = train_seconds(trees[label], args.spec, out, args)
                times[label].append(seconds)
                print(f"round {r}  {label:2}  train_seconds {seconds:7.2f}  test_acc {acc}",
                      flush=True)
    print("medians:", {k: round(statistics.median(v), 2) for k, v in times.items()})
    for name, label in (("B / A", "B"), ("control A' / A", "A'")):
        ratios = [x / a for a, x in zip(times["A"], times[label])]
        print(f"{name}: median {statistics.median(ratios):.3f}, per round "
              f"{', '.join(f'{x:.3f}' for x in ratios)}")


if __name__ == "__main__":
    main()
