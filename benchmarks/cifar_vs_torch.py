"""Time specs/cifar10-resnet.yaml in netspec and in its PyTorch twin on CIFAR-shaped data, with
the spec's augmentation (random 32x32 crop of the image padded by 4, horizontal flip) on both
sides.

Usage (from the repository root, with the venv that has torch):

    python benchmarks/cifar_vs_torch.py                       # 0.1 epoch of 50k, 3 repeats
    python benchmarks/cifar_vs_torch.py --epochs-fraction 1 --repeats 5 --json out.json

The data is random: 50,000 training and 10,000 test images of 3x32x32 uint8 pixels and random
labels, normalised per channel with the training images' statistics (netspec.data.prepare), as
the real dataset would be. Speed does not depend on what the pixels show.

* train: shuffled batches of the spec's batch size with its optimizer and augmentation.
  netspec runs `Trainer.train_epoch` (the code path of `netspec train`, augmentation in its
  worker processes); torch the idiomatic loop on pre-made tensors, augmenting each batch with
  batched tensor operations (pad with the normalised fill, a random window per sample by
  gathering rows and columns, a flip where a coin says so), which is faster than torchvision's
  per-image transforms, so the comparison is against a strong baseline.
* infer: eval-mode batches of 1,000 over the test images (`Trainer.evaluate` vs. torch under
  no_grad), both computing the loss and the predictions.

Both sides start from the same weights (torch_bridge.to_torch of netspec's plan) and are
interleaved (the order alternates between repeats), and the table shows medians with min/max
and the ratio netspec / torch of the medians (below 1: netspec is faster).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vs_torch import NetspecSide, TorchSide, environment, summary, workers_arg


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(ROOT / "specs" / "cifar10-resnet.yaml"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs-fraction", type=float, default=0.1,
                   help="time this fraction of an epoch of 50,000 (inference: of 10,000)")
    p.add_argument("--eval-batch-size", type=int, default=1000)
    p.add_argument("--workers", type=workers_arg, default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    p.add_argument("--json", metavar="FILE")
    return p.parse_args(argv)


def random_cifar(seed: int = 0):
    """Prepared splits of 50k/10k random 3x32x32 images (float32, per-channel normalised)."""
    from netspec.data import prepare
    from netspec.data.dataset import Dataset, Split

    rng = np.random.default_rng(seed)

    def split(n):
        return Split(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                     rng.integers(0, 10, n).astype(np.int64))

    return prepare(Dataset("random-cifar", split(50_000), split(10_000), 10))


class AugmentedNetspec(NetspecSide):
    """bench_vs_torch's netspec side, on prepared splits (so augmentation gets their
    normalisation) and evaluating the test split."""

    def __init__(self, spec, splits, workers):
        super().__init__(spec, *splits["train"], workers)
        self.splits = splits

    def reset(self):
        from netspec.train.trainer import Trainer

        if self.trainer is None:  # as NetspecSide.reset, with the test split for evaluate
            import copy

            self.trainer = Trainer(self.spec, self.splits, dtype="float32", workers=self.workers)
            self.trainer.start_workers()
            self.start = copy.deepcopy(self.trainer.state())
            return
        super().reset()

    def infer(self, images: int, batch: int) -> float:
        x, y = self.splits["test"]
        start = time.perf_counter()
        self.trainer.evaluate(x[:images], y[:images], batch, split="test")
        return time.perf_counter() - start


class AugmentedTorch(TorchSide):
    """bench_vs_torch's PyTorch loop, augmenting each training batch as the spec says and
    evaluating the test split."""

    def __init__(self, spec, splits, fill):
        import torch

        super().__init__(spec, *(np.ascontiguousarray(a) for a in splits["train"]), spec.seed)
        self.eval_x, self.eval_y = (torch.from_numpy(np.ascontiguousarray(a))
                                    for a in splits["test"])
        self.fill = torch.tensor(fill, dtype=torch.float32).view(1, -1, 1, 1)
        a = spec.data.augment
        self.pad = a.crop.padding if a is not None and a.crop is not None else 0
        self.flip = a.horizontal_flip if a is not None else 0.0

    def augment(self, xb):
        torch, p = self.torch, self.pad
        b, c, h, w = xb.shape
        if p:
            padded = self.fill.expand(b, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p:p + h, p:p + w] = xb
            dy = torch.randint(0, 2 * p + 1, (b,), generator=self.gen)
            dx = torch.randint(0, 2 * p + 1, (b,), generator=self.gen)
            rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, c, h, w + 2 * p)
            xb = torch.gather(padded, 2, rows)
            cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, c, h, w)
            xb = torch.gather(xb, 3, cols)
        if self.flip:
            coin = torch.rand(b, generator=self.gen) < self.flip
            xb = torch.where(coin[:, None, None, None], xb.flip(3), xb)
        return xb


def run(args) -> dict:
    import torch

    import netspec
    from netspec.data.augment import Augmenter

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    env = environment(None)
    spec = netspec.load(args.spec)
    splits = random_cifar()
    steps = max(1, round(math.ceil(50_000 / spec.train.batch_size) * args.epochs_fraction))
    images = max(1, round(10_000 * args.epochs_fraction))
    crop = spec.data.augment.crop
    fill = Augmenter(spec.data.augment, (3, 32, 32), 0, 1, splits.norm).fills["crop"] \
        if crop is not None else np.zeros(3)
    ours, theirs = AugmentedNetspec(spec, splits, args.workers), AugmentedTorch(spec, splits, fill)
    times = {(phase, side): [] for phase in ("train", "infer") for side in ("netspec", "torch")}
    ours.reset()
    theirs.reset(ours.initial_state())
    for side in (ours, theirs):  # warm-up, untimed
        side.train(min(steps, 5))
        side.infer(min(images, 2 * args.eval_batch_size), args.eval_batch_size)
    for r in range(args.repeats):
        order = (ours, theirs) if r % 2 == 0 else (theirs, ours)
        ours.reset()
        theirs.reset(ours.initial_state())
        for phase in ("train", "infer"):
            for side in order:
                seconds = side.train(steps) if phase == "train" else side.infer(
                    images, args.eval_batch_size)
                times[phase, side.name].append(seconds)
    workers = ours.trainer.workers
    ours.trainer.close()
    results = []
    for phase in ("train", "infer"):
        a, b = times[phase, "netspec"], times[phase, "torch"]
        paired = [u / v for u, v in zip(a, b)]
        results.append({"spec": spec.name, "phase": phase,
                        "work": (f"{steps} batches of {spec.train.batch_size} with "
                                 f"augmentation, netspec workers {workers}" if phase == "train"
                                 else f"{images} images in batches of {args.eval_batch_size}"),
                        "netspec": summary(a), "torch": summary(b),
                        "ratio": statistics.median(a) / statistics.median(b),
                        "ratio_min": min(paired), "ratio_max": max(paired)})
    env["load_avg_end"] = os.getloadavg()
    return {"environment": env, "repeats": args.repeats, "results": results}


def main(argv=None) -> int:
    from bench_vs_torch import format_table

    args = parse_args(argv)
    report = run(args)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
