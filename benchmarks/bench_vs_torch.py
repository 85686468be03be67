"""Time netspec and PyTorch side by side on the same specs, data, batch sizes and machine.

Usage (from the repository root, with the venv that has torch and threadpoolctl):

    python benchmarks/bench_vs_torch.py --data-dir /path/to/mnist            # full run, 3 repeats
    python benchmarks/bench_vs_torch.py --specs lenet mlp --repeats 5
    python benchmarks/bench_vs_torch.py --steps 100                          # quick: 100 batches
    python benchmarks/bench_vs_torch.py --epochs-fraction 0.25 --json out.json

The data directory holds MNIST's four IDX files (.gz or not); it defaults to $NETSPEC_DATA.
What is timed, for each spec (lenet, lenet-max, mlp, vgg-bn (benchmarks/specs/, a batchnorm
VGG-style net) and record by default; a name or a YAML path):

* train: one training epoch over the 60k training images in shuffled batches of the spec's
  batch size, with the spec's SGD settings. netspec runs `Trainer.train_epoch` (the code path of
  `netspec train`); torch runs the idiomatic loop (zero_grad, forward, CrossEntropyLoss,
  backward, step) on pre-made tensors. Both shuffle every epoch and both keep the running loss
  and accuracy, as a trainer does.
* infer: a forward pass in eval mode over the 60k training images in batches of 1000
  (`Trainer.evaluate` vs. torch under no_grad), both computing the loss and the predictions.

Both sides get the same normalised float32 arrays in memory and the same initial weights (the
torch module is built by `netspec.interop.torch_bridge.to_torch` from netspec's plan). Every repeat
starts again from those weights. netspec and torch runs are interleaved (the order alternates
between repeats) so that load from other processes hits both alike; the table shows medians with
min/max and the ratio netspec/torch of the medians (below 1: netspec is faster), plus the range of
the per-repeat ratios. torch uses `--threads` threads (default: all cores); NumPy's BLAS keeps its
own setting unless `--threads` is given. OPENBLAS_CORETYPE is reported, never changed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPECS = ("lenet", "lenet-max", "mlp", "vgg-bn", "record")
PHASES = ("train", "infer")


def workers_arg(text: str) -> int | str:
    return text if text == "auto" else int(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("NETSPEC_DATA"),
                   help="directory with the MNIST IDX files (default: $NETSPEC_DATA)")
    p.add_argument("--specs", nargs="+", default=list(DEFAULT_SPECS),
                   help="spec names in specs/ or YAML paths (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--epochs-fraction", type=float, default=1.0,
                        help="time this fraction of an epoch (and of the inference pass)")
    amount.add_argument("--steps", type=int, default=None,
                        help="time this many training batches (inference: as many images)")
    p.add_argument("--eval-batch-size", type=int, default=1000)
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads and BLAS threads (default: torch gets all cores, BLAS "
                        "keeps its own setting)")
    p.add_argument("--workers", type=workers_arg, default="auto",
                   help="netspec training processes, as `netspec train --workers` (default: "
                        "auto)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-': stdout)")
    args = p.parse_args(argv)
    if args.data_dir is None:
        p.error("give --data-dir or set NETSPEC_DATA to the directory holding MNIST")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be at least 1")
    if not 0 < args.epochs_fraction <= 1:
        p.error("--epochs-fraction must be in (0, 1]")
    return args


# ------------------------------------------------------------------ setup


def spec_path(name: str) -> Path:
    """'lenet' -> specs/lenet.yaml, 'vgg-bn' -> benchmarks/specs/vgg-bn.yaml; a path is taken
    as it is."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path
    mine = ROOT / "specs" / f"{name}.yaml"
    return mine if mine.exists() else ROOT / "benchmarks" / "specs" / f"{name}.yaml"


def load_data(data_dir: str, normalize: str):
    """Training images (N, 1, H, W) float32 normalised as the spec says, labels int64 (N,)."""
    from netspec.data import load_dataset, prepare

    ds = load_dataset("mnist", data_dir=data_dir, download_missing=False)
    x, y = prepare(ds, normalize=normalize, dtype="float32")["train"]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def environment(threads: int | None) -> dict:
    """Versions, thread counts and the BLAS libraries in use (threadpoolctl)."""
    import torch
    from threadpoolctl import threadpool_info

    pools = [{k: info.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                        "num_threads", "architecture", "threading_layer")}
             for info in threadpool_info()]
    return {
        "python": platform.python_version(), "numpy": np.__version__,
        "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "blas_threads_override": threads,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "threadpools": pools, "machine": platform.machine(), "load_avg": os.getloadavg(),
    }


# ------------------------------------------------------------------ the two sides


class NetspecSide:
    """netspec through the trainer's own epoch and evaluation functions."""

    name = "netspec"

    def __init__(self, spec, x, y, workers):
        self.spec, self.x, self.y, self.workers = spec, x, y, workers
        self.trainer = None

    def reset(self):
        """Back to the initial weights, optimizer state and RNG. The first call makes the
        trainer and forks its worker processes (once per run in `netspec train`, so untimed,
        and before the warm-up, which absorbs the page copies a fork costs both processes);
        later calls rewind that trainer in place."""
        from netspec.train.trainer import Trainer

        if self.trainer is None:
            self.trainer = Trainer(self.spec, {"train": (self.x, self.y)}, dtype="float32",
                                   workers=self.workers)
            self.trainer.start_workers()
            self.start = copy.deepcopy(self.trainer.state())
            return
        params, optimizer, _ = self.start
        t = self.trainer
        t.plan.load_state_dict(params)
        t.optimizer.load_state_dict(optimizer)
        t.progress = type(t.progress)()

    def initial_state(self) -> dict:
        return self.trainer.plan.state_dict()

    def train(self, steps: int) -> float:
        t = self.trainer
        done = []
        stop = None if steps >= math.ceil(len(self.x) / self.spec.train.batch_size) else (
            lambda: len(done) >= steps)
        on_step = None if stop is None else (lambda *a: done.append(1))
        start = time.perf_counter()
        stats = t.train_epoch(on_step=on_step, should_stop=stop)
        seconds = time.perf_counter() - start
        if not math.isfinite(stats.loss):
            raise RuntimeError(f"netspec training diverged (loss {stats.loss})")
        return seconds

    def infer(self, images: int, batch: int) -> float:
        start = time.perf_counter()
        self.trainer.evaluate(self.x[:images], self.y[:images], batch, split="train")
        return time.perf_counter() - start


class TorchSide:
    """The idiomatic PyTorch loop on pre-made tensors, with the same initial weights."""

    name = "torch"

    def __init__(self, spec, x, y, seed: int):
        import torch

        self.torch, self.spec = torch, spec
        self.x = torch.from_numpy(x.reshape(len(x), *spec.input.shape))  # shares memory
        self.y = torch.from_numpy(y)
        self.eval_x, self.eval_y = self.x, self.y  # what `infer` runs on
        self.gen = torch.Generator().manual_seed(seed)

    def reset(self, state: dict):
        from netspec.interop.torch_bridge import load_state_dict, to_torch, torch_optimizer

        self.model = to_torch(self.spec, dtype="float32")
        load_state_dict(self.model, state)
        self.opt = torch_optimizer(self.spec, self.model)
        self.loss_fn = self.torch.nn.CrossEntropyLoss()

    def train(self, steps: int) -> float:
        torch, model, opt, loss_fn = self.torch, self.model, self.opt, self.loss_fn
        batch, n = self.spec.train.batch_size, len(self.y)
        model.train()
        start = time.perf_counter()
        order = torch.randperm(n, generator=self.gen)
        loss_sum, correct = 0.0, 0
        for step in range(steps):
            idx = order[step * batch:(step + 1) * batch]
            xb, yb = self.augment(self.x[idx]), self.y[idx]
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((out.argmax(1) == yb).sum())
        seconds = time.perf_counter() - start
        if not math.isfinite(loss_sum):
            raise RuntimeError("torch training diverged")
        return seconds

    def augment(self, xb):
        """A training batch as the model sees it (here as it is; cifar_vs_torch.py augments)."""
        return xb

    def infer(self, images: int, batch: int) -> float:
        torch, model = self.torch, self.model
        model.eval()
        preds = torch.empty(images, dtype=torch.int64)
        start = time.perf_counter()
        loss_sum = 0.0
        with torch.no_grad():
            for i in range(0, images, batch):
                xb, yb = (self.eval_x[i:min(i + batch, images)],
                          self.eval_y[i:min(i + batch, images)])
                out = model(xb)
                loss_sum += float(torch.nn.functional.cross_entropy(out, yb)) * len(yb)
                preds[i:i + len(yb)] = out.argmax(1)
        return time.perf_counter() - start


# ------------------------------------------------------------------ running


def summary(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times),
            "times": times}


def run(args) -> dict:
    import torch

    import netspec

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    limiter = None
    if args.threads:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(args.threads, user_api="blas")
    env = environment(args.threads)

    specs = [netspec.load(spec_path(name)) for name in args.specs]
    data = {}
    results = []
    for spec in specs:
        norm = spec.data.normalize
        if norm not in data:
            data[norm] = load_data(args.data_dir, norm)
        x, y = data[norm]
        batch = spec.train.batch_size
        full_steps = math.ceil(len(x) / batch)
        if args.steps is not None:
            steps = min(args.steps, full_steps)
            images = min(steps * batch, len(x))
        else:
            steps = max(1, round(full_steps * args.epochs_fraction))
            images = max(1, round(len(x) * args.epochs_fraction))
        ours, theirs = NetspecSide(spec, x, y, args.workers), TorchSide(spec, x, y, spec.seed)
        times = {(phase, side.name): [] for phase in args.phases for side in (ours, theirs)}

        # warm-up (untimed): allocate workspaces, load kernels, fault in pages
        ours.reset()
        theirs.reset(ours.initial_state())
        for side in (ours, theirs):
            side.train(min(steps, 20))
            side.infer(min(images, 2 * args.eval_batch_size), args.eval_batch_size)

        for r in range(args.repeats):
            order = (ours, theirs) if r % 2 == 0 else (theirs, ours)
            ours.reset()  # every repeat starts from the same initial weights
            theirs.reset(ours.initial_state())
            for phase in args.phases:
                for side in order:
                    if phase == "train":
                        seconds = side.train(steps)
                    else:
                        seconds = side.infer(images, args.eval_batch_size)
                    times[phase, side.name].append(seconds)
        ours.trainer.close()
        for phase in args.phases:
            a, b = times[phase, "netspec"], times[phase, "torch"]
            paired = [u / v for u, v in zip(a, b)]
            results.append({
                "spec": spec.name, "phase": phase,
                "work": (f"{steps} batches of {batch}, netspec workers: {ours.trainer.workers}"
                         if phase == "train"
                         else f"{images} images in batches of {args.eval_batch_size}"),
                "netspec": summary(a), "torch": summary(b),
                "ratio": statistics.median(a) / statistics.median(b),
                "ratio_min": min(paired), "ratio_max": max(paired),
            })
    if limiter is not None:
        limiter.restore_original_limits()
    env["load_avg_end"] = os.getloadavg()
    return {"environment": env, "repeats": args.repeats, "results": results}


def format_table(report: dict) -> str:
    env = report["environment"]
    lines = [(f"numpy {env['numpy']}, torch {env['torch']}, python {env['python']}, "
              f"{env['cpu_count']} cores, torch threads {env['torch_threads']} "
              f"(interop {env['torch_interop_threads']}), "
              f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE'] or '(unset)'}")]
    for pool in env["threadpools"]:
        lines.append(f"  threadpool: {pool['user_api']}/{pool['internal_api']} "
                     f"{pool['prefix']} {pool['version'] or ''} threads={pool['num_threads']} "
                     f"{pool.get('architecture') or ''}".rstrip())
    load0, load1 = env["load_avg"][0], env["load_avg_end"][0]
    lines.append(f"load average (1 min) {load0:.2f} at start, {load1:.2f} at end; "
                 f"{report['repeats']} repeats, seconds: median [min, max]")
    lines.append("")
    header = (f"{'spec':<10} {'phase':<6} {'netspec s':>22} {'torch s':>22} "
              f"{'ratio':>6} {'paired range':>13}  work")
    lines += [header, "-" * len(header)]
    for r in report["results"]:
        ns, th = r["netspec"], r["torch"]
        lines.append(
            f"{r['spec']:<10} {r['phase']:<6} "
            f"{ns['median']:7.3f} [{ns['min']:6.3f},{ns['max']:6.3f}] "
            f"{th['median']:7.3f} [{th['min']:6.3f},{th['max']:6.3f}] "
            f"{r['ratio']:6.2f} {r['ratio_min']:5.2f}-{r['ratio_max']:<5.2f}   {r['work']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    report = run(args)
    print(format_table(report))
    if args.json:
        text = json.dumps(report, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
