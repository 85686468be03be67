"""Per-layer timing of a compiled plan, like `caffe time`: where does a training step go?

    report = time_layers(plan, batch_size=64, repeats=20, rng=np.random.default_rng(0),
                         loss=spec.loss, optimizer=spec.train.optimizer)
    report.layers[0].forward_ms, report.step_ms, report.images_per_s

A step is what the trainer's hot loop does: forward (train=True), the loss on the (K, N) logits,
backward (the first layer skips dL/dx, as in training) and one optimizer step. Layers are timed
through `plan.hook`, so the timed loops are the plan's own (graph wiring included). Inputs are
random normal images and random labels, made once outside the timed region. Each repeat runs one
instrumented step (a clock reading around every layer's forward and backward, the loss and the
optimizer step) and one plain step timed as a whole; the report gives medians over the repeats.
The plan's parameters are restored afterwards, so timing never changes a model.

This module only measures and returns data; `netspec bench` prints it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from netspec.kernels.ufuncs import ufunc_buffer
from netspec.nn.losses import CrossEntropy
from netspec.plan import fuse


@dataclass(frozen=True)
class LayerTime:
    """Median times of one layer over the repeats, in milliseconds per batch."""

    name: str
    type: str
    out_shape: tuple  # per sample
    forward_ms: float
    backward_ms: float
    share: float  # (forward + backward) / the instrumented step's total, 0..1

    @property
    def total_ms(self) -> float:
        return self.forward_ms + self.backward_ms


@dataclass(frozen=True)
class BenchReport:
    """Per-layer medians plus whole-step statistics (milliseconds per batch)."""

    batch_size: int
    repeats: int
    dtype: str
    layers: list[LayerTime] = field(default_factory=list)
    loss_ms: float = 0.0  # loss value and dloss/dlogits
    optimizer_ms: float = 0.0  # one optimizer.step (0 when no optimizer was given)
    step_ms: float = 0.0  # median of whole uninstrumented steps
    step_min_ms: float = 0.0
    step_max_ms: float = 0.0

    @property
    def forward_ms(self) -> float:
        return sum(t.forward_ms for t in self.layers)

    @property
    def backward_ms(self) -> float:
        return sum(t.backward_ms for t in self.layers)

    @property
    def images_per_s(self) -> float:
        return self.batch_size / (self.step_ms / 1000) if self.step_ms > 0 else float("inf")

    def to_dict(self) -> dict:
        """Plain JSON-ready data, with the derived totals included."""
        out = asdict(self)
        out["layers"] = [{**asdict(t), "out_shape": list(t.out_shape)} for t in self.layers]
        out.update(forward_ms=self.forward_ms, backward_ms=self.backward_ms,
                   images_per_s=self.images_per_s)
        return out


def time_layers(plan, batch_size: int, repeats: int, rng: np.random.Generator, *,
                loss=None, optimizer=None, lr: float | None = None, warmup: int = 2,
                clock=time.perf_counter) -> BenchReport:
    """Time `repeats` training steps of `plan` on random data; return per-layer medians.

    `loss` is a netspec loss (default cross-entropy); `optimizer` an optimizer spec such as
    `spec.train.optimizer` (built here on the plan's parameters; None leaves the update out)
    stepped with `lr` (default: the spec's lr). `warmup` untimed steps come first so that
    workspaces are allocated and caches warm. `rng` draws the inputs and labels only.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"batch_size and repeats must be >= 1 and warmup >= 0, got "
                         f"{batch_size}, {repeats}, {warmup}")
    loss = loss if loss is not None else CrossEntropy()
    saved = plan.state_dict()  # restored at the end: timing never changes the model
    opt = optimizer.build(plan.params) if optimizer is not None else None
    step_lr = lr if lr is not None else getattr(optimizer, "lr", 0.0)
    classes = plan.out_shape[0]
    x = plan.to_internal(rng.standard_normal((batch_size, *plan.in_shape)))  # (*in, N)
    labels = rng.integers(0, classes, batch_size)
    steps = plan.steps
    n_layers = len(steps)
    position = {id(step): i for i, step in enumerate(steps)}

    def plain_step():
        logits = plan.run_forward(x, train=True)  # (K, N)
        _, dlogits = loss(logits, labels, axis=0)
        plan.run_backward(dlogits)
        if opt is not None:
            opt.step(plan.grads, step_lr)

    # fwd[r, i], bwd[r, i]: seconds of layer i in repeat r; extra[r] = (loss, optimizer, step)
    fwd = np.zeros((repeats, n_layers))
    bwd = np.zeros((repeats, n_layers))
    extra = np.zeros((repeats, 3))
    row = 0  # the repeat being timed

    def timer(step, phase, fn, *args):
        """The plan's hook: a clock reading around each layer call of its own loops."""
        t0 = clock()
        out = fn(*args)
        (fwd if phase == "forward" else bwd)[row, position[id(step)]] = clock() - t0
        return out

    def instrumented_step(r):
        nonlocal row
        row = r
        plan.hook = timer
        try:
            h = plan.run_forward(x, train=True)
            t0 = clock()
            _, dy = loss(h, labels, axis=0)
            extra[r, 0] = clock() - t0
            plan.run_backward(dy)  # layers reading the input skip dL/dx, as in training
        finally:
            plan.hook = None
        if opt is not None:
            t0 = clock()
            opt.step(plan.grads, step_lr)
            extra[r, 1] = clock() - t0

    try:
        with ufunc_buffer():  # the buffer size run_forward/run_backward use
            for _ in range(warmup):
                plain_step()
            for r in range(repeats):
                instrumented_step(r)
                t0 = clock()
                plain_step()
                extra[r, 2] = clock() - t0
    finally:
        plan.load_state_dict(saved, "saved state")

    ms = 1000.0
    fwd_med = np.median(fwd, axis=0) * ms
    bwd_med = np.median(bwd, axis=0) * ms
    loss_ms, opt_ms = (float(v) for v in np.median(extra[:, :2], axis=0) * ms)
    total = float(fwd_med.sum() + bwd_med.sum()) + loss_ms + opt_ms
    types = {s.name: s.info.type for s in steps}
    heads = {chain[0]: chain for chain in fuse.chains(plan.fused)}  # netspec/plan/fuse.py
    inside = {name: chain[0] for chain in heads.values() for name in chain[1:]}
    kinds = ["+".join(types[n] for n in heads[s.name]) if s.name in heads else
             f"{s.info.type} (in {inside[s.name]})" if s.name in inside else s.info.type
             for s in steps]
    layers = [LayerTime(s.name, kind, tuple(s.info.out_shape), float(f), float(b),
                        float((f + b) / total) if total > 0 else 0.0)
              for s, kind, f, b in zip(steps, kinds, fwd_med, bwd_med)]
    return BenchReport(batch_size, repeats, str(plan.dtype), layers, loss_ms, opt_ms,
                       step_ms=float(np.median(extra[:, 2]) * ms),
                       step_min_ms=float(extra[:, 2].min() * ms),
                       step_max_ms=float(extra[:, 2].max() * ms))
