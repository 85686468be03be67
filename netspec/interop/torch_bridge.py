"""The same network, optimizer and schedule in PyTorch (optional; torch is imported lazily).

    from netspec.interop.torch_bridge import to_torch, torch_optimizer, torch_scheduler
    module = to_torch(spec, plan)                 # a torch module with plan's params and buffers
    opt = torch_optimizer(spec, module)           # train.optimizer as torch.optim
    sched = torch_scheduler(spec, opt)            # train.schedule as torch.optim.lr_scheduler

The module's children are named after netspec's layers (see to_torch), so
`module.state_dict()` keys are netspec's parameter and buffer names ("conv1.weight",
"bn3.running_mean"). The one difference: torch's BatchNorm also keeps `num_batches_tracked`,
which netspec does not; `load_state_dict` below leaves that key as it is and is strict about
every other one. The parity tests (tests/test_torch_parity.py) and the benchmarks use this file.
`import netspec` never imports it, so netspec runs without torch.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from netspec.checkpoint import check_fits
from netspec.plan.shapes import INPUT

TORCH_ONLY = ("num_batches_tracked",)  # buffer names torch has and netspec does not


def to_torch(spec, plan=None, dtype=None):
    """A torch module equal to `spec`'s network, with `plan`'s parameters when given.

    Only `spec.infos` (shape inference's LayerInfo list) is read. Each layer's twin comes from
    its own file (`Layer.torch_module`). A plain chain of layers becomes an nn.Sequential; a
    graph becomes a module that runs the twins in list order on the outputs their `inputs`
    name, with the twins nested by name (layer1.0.conv1 is module layer1 -> 0 -> conv1), so the
    state_dict keys are netspec's names either way. dtype defaults to the plan's (float32 or
    float64), else torch's default. Without a plan the module keeps torch's own initialisation
    (and torch's default BatchNorm buffers, which equal netspec's).
    """
    import torch
    from torch import nn

    infos = list(spec.infos)
    twins = OrderedDict()
    for info in infos:
        try:
            twins[info.name] = info.layer.torch_module(info, nn)
        except NotImplementedError as e:
            raise NotImplementedError(f"{e} (layer '{info.name}')") from None
    chain = all(not i.layer.multi_input and "." not in i.name
                and i.inputs == ((infos[k - 1].name,) if k else (INPUT,))
                for k, i in enumerate(infos))
    module = nn.Sequential(twins) if chain else _graph(nn, infos, twins)
    if dtype is None and plan is not None:
        dtype = str(plan.dtype)
    if dtype is not None:
        module.to(getattr(torch, str(np.dtype(dtype))))
    if plan is not None:
        load_state_dict(module, plan.state_dict())
    return module


def _graph(nn, infos, twins):
    """An nn.Module running `twins` in order, each on the outputs its LayerInfo.inputs name."""

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self.wiring = [(i.name, i.inputs) for i in infos]
            for name, twin in twins.items():
                *path, leaf = name.split(".")
                parent = self
                for part in path:  # containers, as nn.Sequential nests: layer1 -> 0 -> conv1
                    if not hasattr(parent, part):
                        parent.add_module(part, nn.Module())
                    parent = getattr(parent, part)
                parent.add_module(leaf, twin)

        def forward(self, x):
            outs = {INPUT: x}
            for name, inputs in self.wiring:
                outs[name] = self.get_submodule(name)(*(outs[n] for n in inputs))
            return outs[name]

    return Graph()


def load_state_dict(module, state: dict[str, np.ndarray]) -> None:
    """Copy numpy arrays, by netspec/torch name, into `module` (in the module's dtypes).

    Strict on every key except torch-only BatchNorm `num_batches_tracked`, which keeps its
    value: a missing, unexpected or wrongly shaped key raises CheckpointError.
    """
    import torch

    mine = module.state_dict()
    check_fits(state, {k: tuple(v.shape) for k, v in mine.items()},
               "state does not fit the torch module", optional=TORCH_ONLY)
    full = {k: (torch.as_tensor(np.asarray(state[k])).to(v.dtype) if k in state else v)
            for k, v in mine.items()}
    module.load_state_dict(full, strict=True)


def torch_optimizer(spec, module):
    """`spec.train.optimizer` as the torch.optim optimizer with the same options."""
    import torch

    o = spec.train.optimizer
    params = module.parameters()
    if o.type == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=o.weight_decay)
    if o.type in ("adam", "adamw"):
        cls = torch.optim.Adam if o.type == "adam" else torch.optim.AdamW
        return cls(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    raise NotImplementedError(f"torch_bridge has no entry for optimizer type '{o.type}'")


def torch_scheduler(spec, optimizer, steps_per_epoch: int = 1):
    """`spec.train.schedule` as a torch scheduler. Call its step() once per epoch, or once per
    optimizer step when the schedule's interval is 'step' (then pass steps_per_epoch)."""
    from torch.optim import lr_scheduler as ls

    s, spe = spec.train.schedule, steps_per_epoch
    total = spec.train.epochs * (spe if s.interval == "step" else 1)
    if s.type == "constant":
        return ls.LambdaLR(optimizer, lambda epoch: 1.0)
    if s.type == "step":
        return ls.StepLR(optimizer, s.step_size, s.gamma)
    if s.type == "multistep":
        return ls.MultiStepLR(optimizer, list(s.milestones), s.gamma)
    if s.type == "exponential":
        return ls.ExponentialLR(optimizer, s.gamma)
    if s.type == "cosine":
        w = s.warmup(spe)
        cosine = ls.CosineAnnealingLR(optimizer, T_max=max(total - w, 1), eta_min=s.min_lr)
        if not w:
            return cosine
        # warmup base * (t + 1) / (w + 1) for t < w is LinearLR from 1/(w+1) to 1 over w units
        warmup = ls.LinearLR(optimizer, start_factor=1 / (w + 1), end_factor=1.0, total_iters=w)
        return ls.SequentialLR(optimizer, [warmup, cosine], milestones=[w])
    raise NotImplementedError(f"torch_bridge has no entry for schedule type '{s.type}'")
