"""The PyTorch twin of a netspec training run: the same spec, seed, initial weights, optimizer,
schedule (stepped per iteration for `interval: step`), batch size and data, trained by torch.

Usage (from the repository root, in an environment with torch):

    python benchmarks/record_torch.py --data-dir ../shared/data/mnist                # record
    python benchmarks/record_torch.py --spec specs/record.yaml --seed 1 --threads 1 --json o.json

The module is `netspec.interop.torch_bridge.to_torch` of netspec's freshly initialised plan for that
seed, so both start from identical weights. Each epoch shuffles with a torch Generator seeded
with the spec's seed and runs the idiomatic loop (zero_grad, forward, CrossEntropyLoss,
backward, step, scheduler step), then evaluates the test split in eval mode. train_seconds is
the training pass alone, as in netspec's metrics.jsonl. For a lockstep comparison on a loaded
machine use benchmarks/reference_table.py, which alternates netspec and torch epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "record.yaml"))
    p.add_argument("--data-dir", default=os.environ.get("NETSPEC_DATA"))
    p.add_argument("--seed", type=int, default=None, help="override the spec's seed")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--json", default=None, help="also write the per-epoch results here")
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("give --data-dir or set NETSPEC_DATA")
    sys.path.insert(0, str(ROOT))
    import torch
    from reference_table import torch_epoch, torch_eval

    import netspec
    from netspec.data import load_dataset, prepare
    from netspec.interop.torch_bridge import to_torch, torch_optimizer, torch_scheduler

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = netspec.load(args.spec, [f"seed={args.seed}"] if args.seed is not None else [])
    splits = prepare(load_dataset("mnist", data_dir=args.data_dir, download_missing=False),
                     spec.data.normalize)
    tx = {k: (torch.from_numpy(v[0]), torch.from_numpy(v[1])) for k, v in splits.items()}
    model = to_torch(spec, netspec.compile(spec, "float32"))  # netspec's initial weights
    opt = torch_optimizer(spec, model)
    batch = spec.train.batch_size
    steps_per_epoch = -(-len(tx["train"][1]) // batch)
    sched = torch_scheduler(spec, opt, steps_per_epoch)
    per_step = sched if spec.train.schedule.interval == "step" else None
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(spec.seed)
    history = []
    for epoch in range(spec.train.epochs):
        seconds, loss, acc = torch_epoch(model, opt, loss_fn, *tx["train"], batch, gen, per_step)
        if per_step is None:
            sched.step()
        _, test_loss, test_acc = torch_eval(model, loss_fn, *tx["test"])
        history.append({"epoch": epoch + 1, "train_seconds": seconds, "train_loss": loss,
                        "train_acc": acc, "test_loss": test_loss, "test_acc": test_acc})
        print(f"torch {spec.name} seed {spec.seed} epoch {epoch + 1}/{spec.train.epochs}: "
              f"{seconds:.1f} s, train acc {100 * acc:.2f}%, test acc {100 * test_acc:.2f}%",
              flush=True)
    total = sum(h["train_seconds"] for h in history)
    print(f"torch {spec.name} seed {spec.seed}: test {100 * history[-1]['test_acc']:.2f}% "
          f"after {spec.train.epochs} epochs, train_seconds {total:.1f} "
          f"({torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"spec": spec.name, "seed": spec.seed, "threads": torch.get_num_threads(),
             "load_avg_end": os.getloadavg(), "history": history}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
