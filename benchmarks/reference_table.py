"""The reference table: the full LeNet recipe trained by netspec and by PyTorch, side by side.

Usage (from the repository root, in an environment with torch):

    python benchmarks/reference_table.py --data-dir ../shared/data/mnist
    python benchmarks/reference_table.py --specs lenet --epochs 2          # a quick look
    python benchmarks/reference_table.py --specs resnet-mini inception-mini  # the graph specs

For each spec (default: lenet, lenet-max), netspec and PyTorch train the spec's own recipe
(for LeNet: 20 epochs, batch 64, SGD lr 0.02 momentum 0.9 weight decay 1e-4, lr x0.3 every 6
epochs, Kaiming-normal weights, zero biases, standardised inputs; any spec in specs/, graphs
included, through the torch twin of netspec.interop.torch_bridge) from the same initial weights, in
lockstep: one netspec epoch, then one torch epoch, so that machine load hits both alike.
`--specs record --seed 1` trains specs/record.yaml with seed 1 (its schedule, stepped per
optimizer step, is stepped per iteration on the torch side too).

netspec trains through `netspec.train.run.Run` (the code behind `netspec train`, writing a real run
directory with metrics.jsonl, checkpoints and curves.png under --runs), with the same worker
processes as `netspec train` (--workers, default auto). torch runs the idiomatic
loop (zero_grad, forward, CrossEntropyLoss, backward, step; StepLR) on the same normalised
float32 arrays, shuffled every epoch. At the end both evaluate the 60k training images in eval
mode: that gives the train accuracy and the inference time in the table. Test accuracy is the
final epoch's. Times are the training passes alone, summed over epochs.

Prints a Markdown table and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("NETSPEC_DATA"))
    p.add_argument("--specs", nargs="+", default=["lenet", "lenet-max"])
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--seed", type=int, default=None, help="override the spec's seed")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    p.add_argument("--runs", default=str(ROOT / "runs" / "reference"),
                   help="where netspec's run directories go")
    p.add_argument("--workers", type=lambda t: t if t == "auto" else int(t), default="auto",
                   help="netspec training processes, as `netspec train --workers`")
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args(argv)


def torch_epoch(model, opt, loss_fn, x, y, batch, gen, sched_per_step=None):
    """One idiomatic torch training epoch; returns (seconds, loss, accuracy). A scheduler
    given as sched_per_step is stepped after every optimizer step (interval: step)."""
    import torch

    model.train()
    n = len(x)
    order = torch.randperm(n, generator=gen)
    total, correct = 0.0, 0
    start = time.perf_counter()
    for i in range(0, n, batch):
        idx = order[i:i + batch]
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = loss_fn(logits, yb)
        loss.backward()
        opt.step()
        if sched_per_step is not None:
            sched_per_step.step()
        total += loss.item() * len(idx)
        correct += (logits.argmax(1) == yb).sum().item()
    return time.perf_counter() - start, total / n, correct / n


def torch_eval(model, loss_fn, x, y, batch=1000):
    """Eval-mode pass; returns (seconds, loss, accuracy)."""
    import torch

    model.eval()
    total, correct = 0.0, 0
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(x[i:i + batch])
            total += loss_fn(logits, y[i:i + batch]).item() * len(logits)
            correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    return time.perf_counter() - start, total / len(x), correct / len(x)


def run_spec(name, args, splits):
    import torch

    import netspec
    from netspec.interop.torch_bridge import to_torch, torch_optimizer, torch_scheduler
    from netspec.train.run import Run
    from netspec.viz.plots import plot_run

    path = Path(name) if name.endswith(".yaml") else ROOT / "specs" / f"{name}.yaml"
    overrides = [f"train.epochs={args.epochs}"] if args.epochs else []
    overrides += [f"seed={args.seed}"] if args.seed is not None else []
    spec = netspec.load(path, overrides)
    out = Path(args.runs) / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = Run(spec, splits, out, workers=args.workers)
    run.start()
    run.trainer.start_workers()

    model = to_torch(spec, run.trainer.plan)  # same initial weights, float32
    opt = torch_optimizer(spec, model)
    steps_per_epoch = run.trainer.steps_per_epoch
    sched = torch_scheduler(spec, opt, steps_per_epoch)
    per_step = sched if spec.train.schedule.interval == "step" else None
    loss_fn = torch.nn.CrossEntropyLoss()
    tx = {k: (torch.from_numpy(v[0]), torch.from_numpy(v[1])) for k, v in splits.items()}
    gen = torch.Generator().manual_seed(spec.seed)

    torch_history = []
    epochs = spec.train.epochs
    for epoch in range(epochs):
        run.fit(until=epoch + 1)  # one netspec epoch: metrics, checkpoints as `netspec train`
        seconds, loss, acc = torch_epoch(model, opt, loss_fn, *tx["train"],
                                         spec.train.batch_size, gen, per_step)
        if per_step is None:
            sched.step()
        _, test_loss, test_acc = torch_eval(model, loss_fn, *tx["test"])
        torch_history.append({"epoch": epoch + 1, "train_seconds": seconds, "train_loss": loss,
                              "train_acc": acc, "test_loss": test_loss, "test_acc": test_acc})
        ns = run.history[-1]
        print(f"{spec.name} epoch {epoch + 1:2d}/{epochs}: netspec {ns['train_seconds']:.2f} s "
              f"test {100 * ns['test_acc']:.2f}% | torch {seconds:.2f} s "
              f"test {100 * test_acc:.2f}%", flush=True)
    plot_run(run)

    # on the workers too, as `netspec eval`
    ns_eval = run.trainer.evaluate(*splits["train"], split="train")
    run.trainer.close()
    t_seconds, _, t_train_acc = torch_eval(model, loss_fn, *tx["train"])
    return {
        "spec": spec.name, "seed": spec.seed, "epochs": epochs, "run_dir": str(out),
        "netspec_workers": run.trainer.workers,
        "netspec": {"train_acc": ns_eval.accuracy, "test_acc": run.history[-1]["test_acc"],
                    "best_test_acc": max(h["test_acc"] for h in run.history),
                    "train_seconds": sum(h["train_seconds"] for h in run.history),
                    "infer_seconds_60k": ns_eval.seconds, "history": run.history},
        "torch": {"train_acc": t_train_acc, "test_acc": torch_history[-1]["test_acc"],
                  "best_test_acc": max(h["test_acc"] for h in torch_history),
                  "train_seconds": sum(h["train_seconds"] for h in torch_history),
                  "infer_seconds_60k": t_seconds, "history": torch_history},
    }


def main(argv=None):
    args = parse_args(argv)
    import torch

    from netspec.data import load_dataset, prepare

    if not args.data_dir:
        sys.exit("give --data-dir or set NETSPEC_DATA")
    torch.set_num_threads(args.threads)
    splits = prepare(load_dataset("mnist", data_dir=args.data_dir, download_missing=False),
                     "standardize")
    results = [run_spec(name, args, splits) for name in args.specs]
    env = {"python": platform.python_version(), "numpy": np.__version__,
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
           "netspec_workers": args.workers}
    print()
    print("| spec | | train acc | test acc (final / best) | training time | epoch time "
          "(netspec / torch) | inference, 60k |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        ratio = r["netspec"]["train_seconds"] / r["torch"]["train_seconds"]
        for side in ("netspec", "torch"):
            s = r[side]
            print(f"| {r['spec']} | {side} | {100 * s['train_acc']:.2f}% | "
                  f"{100 * s['test_acc']:.2f}% / {100 * s['best_test_acc']:.2f}% | "
                  f"{s['train_seconds']:.0f} s | {s['train_seconds'] / r['epochs']:.1f} s "
                  f"({ratio:.2f}x) | {s['infer_seconds_60k']:.2f} s |")
    print(f"\n{env}")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "results": results}, indent=1))


if __name__ == "__main__":
    main()
