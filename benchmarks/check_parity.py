"""Quick float64 check of netspec against PyTorch after a performance change (needs torch).

Usage (from the repository root):

    python benchmarks/check_parity.py            # exit 1 if any relative error exceeds 1e-8

Compares forward outputs, dL/dx and every parameter gradient, in float64, for:
* every example of the layers this benchmark work touches (conv2d, pooling, relu, linear,
  flatten), with random inputs and with small-integer inputs after a relu (many exact ties,
  which max pooling must break as torch does: the first maximum wins);
* large LeNet-sized layer shapes at batch 64 and at an odd batch;
* lenet, lenet-max and mlp through the cross-entropy loss, in training mode (also along the
  trainer's internal path, which skips dL/dx of the first layer), and in eval mode on batches
  big enough to be run in chunks, followed by a backward.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-8
LAYER_TYPES = ("conv2d", "maxpool2d", "avgpool2d", "relu", "linear", "flatten")
BIG_CASES = [
    ("conv2d", {"out_channels": 6, "kernel_size": 5, "padding": 2}, (1, 28, 28)),
    ("conv2d", {"out_channels": 16, "kernel_size": 5}, (6, 14, 14)),
    ("conv2d", {"out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1}, (2, 30, 30)),
    ("maxpool2d", {"kernel_size": 2}, (6, 28, 28)),
    ("maxpool2d", {"kernel_size": 3, "stride": 1}, (3, 9, 9)),
    ("avgpool2d", {"kernel_size": 3, "stride": 1}, (3, 9, 9)),
]


def rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def grads_error(plan, module) -> float:
    """Worst rel() between netspec's and torch's gradient of each parameter."""
    return max((rel(plan.grads[key], p.grad.numpy()) for key, p in module.named_parameters()),
               default=0.0)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    import torch

    import netspec
    from netspec.interop.torch_bridge import to_torch
    from netspec.nn.layers import LAYERS

    rng = np.random.default_rng(0)
    worst = 0.0
    failures = []

    def record(label, err):
        nonlocal worst
        worst = max(worst, err)
        if not err <= TOL:
            failures.append(f"{label}: {err:.2e}")

    def one_layer(tag, fields, shape, x, train):
        spec = netspec.NetSpec.model_validate({
            "input": {"shape": list(shape)}, "layers": [{"type": tag, **fields}],
            "data": {"dataset": "custom-dir"}})
        plan = netspec.compile(spec, dtype="float64")
        module = to_torch(spec, plan, dtype="float64").train(train)
        xt = torch.tensor(x, requires_grad=True)
        yt = module(xt)
        y = plan.forward(x, train=train)
        dy = rng.standard_normal(y.shape)
        yt.backward(torch.tensor(dy))
        dx = plan.backward(dy)
        err = max(rel(y, yt.detach().numpy()), rel(dx, xt.grad.numpy()),
                  grads_error(plan, module))
        record(f"{tag} {fields} {shape} batch {len(x)} {'train' if train else 'eval'}", err)

    for tag in LAYER_TYPES:
        for fields, shape in LAYERS[tag].examples:
            for train in (True, False):
                one_layer(tag, fields, shape, rng.standard_normal((5, *shape)), train)
                ties = np.maximum(rng.integers(-2, 3, (5, *shape)), 0).astype(np.float64)
                one_layer(tag, fields, shape, ties, train)
    for tag, fields, shape in BIG_CASES:
        for n in (64, 7, 200):
            ties = np.maximum(rng.integers(-2, 3, (n, *shape)), 0).astype(np.float64)
            one_layer(tag, fields, shape, ties, train=n != 200)
            one_layer(tag, fields, shape, rng.standard_normal((n, *shape)), train=n != 200)

    for name in ("lenet", "lenet-max", "mlp"):
        spec = netspec.load(ROOT / "specs" / f"{name}.yaml")
        plan = netspec.compile(spec, dtype="float64")
        module = to_torch(spec, plan, dtype="float64")
        x = rng.standard_normal((64, *spec.input.shape))
        labels = rng.integers(0, 10, 64)
        xt = torch.tensor(x, requires_grad=True)
        loss_t = torch.nn.functional.cross_entropy(module(xt), torch.tensor(labels))
        loss_t.backward()
        loss, dlogits = spec.loss(plan.forward(x, train=True), labels)
        dx = plan.backward(dlogits)
        err = max(abs(loss - loss_t.item()) / abs(loss_t.item()), rel(dx, xt.grad.numpy()),
                  grads_error(plan, module))
        # the trainer's path: internal layout, first layer without dL/dx
        logits = plan.run_forward(plan.to_internal(x), train=True)
        _, dlogits = spec.loss(logits, labels, axis=0)
        plan.run_backward(dlogits)
        err = max(err, grads_error(plan, module))
        record(f"{name} train batch 64", err)

        module.eval()
        module.zero_grad(set_to_none=True)
        for n in (1000, 937):  # chunked in eval mode, then a backward recomputes it whole
            x = np.maximum(rng.standard_normal((n, *spec.input.shape)), 0)
            xt = torch.tensor(x, requires_grad=True)
            yt = module(xt)
            y = plan.forward(x, train=False)
            dy = rng.standard_normal(y.shape)
            yt.backward(torch.tensor(dy))
            dx = plan.backward(dy)
            err = max(rel(y, yt.detach().numpy()), rel(dx, xt.grad.numpy()),
                      grads_error(plan, module))
            module.zero_grad(set_to_none=True)
            record(f"{name} eval batch {n} (+ backward)", err)

    print(f"worst relative error {worst:.2e} (tolerance {TOL:g})")
    for line in failures:
        print("FAIL", line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
