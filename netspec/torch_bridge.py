"""The same network, optimizer and schedule in PyTorch (optional; torch is imported lazily).

    from netspec.torch_bridge import to_torch, torch_optimizer, torch_scheduler
    module = to_torch(spec, plan)                 # nn.Sequential with plan's params and buffers
    opt = torch_optimizer(spec, module)           # train.optimizer as torch.optim
    sched = torch_scheduler(spec, opt)            # train.schedule as torch.optim.lr_scheduler

The module is an nn.Sequential whose children are named after netspec's layers, so
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
from netspec.layers.base import pair

TORCH_ONLY = ("num_batches_tracked",)  # buffer names torch has and netspec does not


def _padding(p):
    """netspec conv padding ('same' / 'valid' / (h, w)) -> torch's."""
    return p if isinstance(p, str) else pair(p)


def _stride(layer):
    return pair(layer.stride) if layer.stride is not None else pair(layer.kernel_size)


# layer type -> (layer, LayerInfo) -> nn.Module. A netspec layer type missing here makes
# to_torch raise NotImplementedError naming it: add its entry when adding the layer.
def _builders(nn):
    return {
        "conv2d": lambda ly, i: nn.Conv2d(
            i.in_shape[0], ly.out_channels, pair(ly.kernel_size), stride=pair(ly.stride),
            padding=_padding(ly.padding), dilation=pair(ly.dilation), bias=ly.bias),
        "linear": lambda ly, i: nn.Linear(i.in_shape[0], ly.out_features, bias=ly.bias),
        "relu": lambda ly, i: nn.ReLU(),
        "leaky_relu": lambda ly, i: nn.LeakyReLU(ly.negative_slope),
        "sigmoid": lambda ly, i: nn.Sigmoid(),
        "tanh": lambda ly, i: nn.Tanh(),
        "maxpool2d": lambda ly, i: nn.MaxPool2d(
            pair(ly.kernel_size), _stride(ly), pair(ly.padding)),
        "avgpool2d": lambda ly, i: nn.AvgPool2d(
            pair(ly.kernel_size), _stride(ly), pair(ly.padding), count_include_pad=True),
        "global_avgpool": lambda ly, i: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        "flatten": lambda ly, i: nn.Flatten(),
        "dropout": lambda ly, i: nn.Dropout(ly.p),
        "batchnorm": lambda ly, i: (nn.BatchNorm2d if len(i.in_shape) == 3 else nn.BatchNorm1d)(
            i.in_shape[0], eps=ly.eps, momentum=ly.momentum),
    }


def to_torch(spec, plan=None, dtype=None):
    """An nn.Sequential equal to `spec`'s network, with `plan`'s parameters when given.

    Only `spec.infos` (shape inference's LayerInfo list) is read. dtype defaults to the plan's
    (float32 or float64), else torch's default. Without a plan the module keeps torch's own
    initialisation (and torch's default BatchNorm buffers, which equal netspec's).
    """
    import torch
    from torch import nn

    builders = _builders(nn)
    children = OrderedDict()
    for info in spec.infos:
        build = builders.get(info.type)
        if build is None:
            raise NotImplementedError(
                f"torch_bridge has no entry for layer type '{info.type}' (layer '{info.name}'); "
                "add one to _builders in netspec/torch_bridge.py")
        children[info.name] = build(info.layer, info)
    module = nn.Sequential(children)
    if dtype is None and plan is not None:
        dtype = str(plan.dtype)
    if dtype is not None:
        module.to(getattr(torch, str(np.dtype(dtype))))
    if plan is not None:
        load_state_dict(module, plan.state_dict())
    return module


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
