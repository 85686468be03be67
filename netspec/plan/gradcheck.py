"""Finite-difference gradient checking of whole specs and of every layer in isolation.

Numbers (published in the README): float64, central differences with step eps = 1e-6, and an
entry passes when |analytic - numeric| <= atol + rtol * |numeric| with atol = 1e-5 and
rtol = 1e-3 (torch.autograd.gradcheck's defaults). Each tensor is checked in full when it has
at most `max_entries` elements, otherwise on a seeded random sample of that many.

Generic values: the whole-network check runs at parameter values drawn for it, not at the
init. Every tensor the init fills with one value (zero biases, batchnorm's ones and zeros,
`init: zeros`) is redrawn around that value, at least 0.1 away from it, seeded by
gradcheck.seed. At the init a zero bias after a relu makes a layer's output exactly 0 wherever
the relu's output is all 0, which puts a kink under every +-eps step of that bias;
at generic values no entry sits at a kink except by a chance of about eps in a million. The
gradients are the same functions either way, so nothing is lost: the layer-by-layer check still
runs at the init.

Kinks: relu and maxpool record which linear piece each forward used (`Ctx.region`). An entry
whose +eps or -eps step changes any of those is skipped (the function is not differentiable
there) and counted in the report; a tensor with no entry left to check fails, with advice
(another gradcheck.seed draws other inputs and values; a smaller gradcheck.eps steps over
fewer kinks). Dropout masks stay fixed because every forward runs at the same noise step
(netspec/kernels/noise.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from netspec.nn.layers import Layer
from netspec.plan.compiler import Plan, compile, layer_plan
from netspec.plan.shapes import infer


@dataclass
class Row:
    """Result for one tensor: a parameter of a layer, or the input gradient."""

    scope: str  # "network" (through the spec's loss) or "layer" (the layer alone)
    layer: str
    type: str
    tensor: str  # "weight", "bias", ... or "input"
    line: int | None
    checked: int = 0
    skipped: int = 0  # entries at a kink
    abs_err: float = 0.0  # |a - n| at the worst entry
    rel_err: float = 0.0  # |a - n| / max(|a|, |n|) at the worst entry
    index: tuple | None = None  # worst entry (by error / tolerance)
    passed: bool = True
    problem: str = ""  # why it failed, when not because of an error above tolerance


@dataclass
class Report:
    name: str
    eps: float
    atol: float
    rtol: float
    rows: list[Row] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def skipped(self) -> int:
        return sum(r.skipped for r in self.rows)

    @property
    def problems(self) -> list[str]:
        """One line per row that failed for a reason other than its error (see Row.problem)."""
        return [f"{r.scope} {r.layer}.{r.tensor}: {r.problem}" for r in self.rows if r.problem]


def check_spec(spec, settings=None, isolated: bool = True, options=None) -> Report:
    """Check a NetSpec through its own loss on a small random batch, then layer by layer.
    options: the PlanOptions to check with (e.g. a conv algorithm); default one process."""
    cfg = settings or spec.gradcheck
    report = Report(spec.name, cfg.eps, cfg.atol, cfg.rtol)
    rng = np.random.default_rng(cfg.seed)
    plan = compile(spec, "float64", options)
    x = rng.standard_normal((cfg.batch_size, *plan.in_shape))
    generic_values(plan, np.random.default_rng([cfg.seed, 1]), cfg.eps)
    classes = plan.out_shape[0]
    labels = rng.integers(0, classes, cfg.batch_size)
    lines = {i.name: spec.source.locate(("layers", i.index))[0] for i in spec.infos}
    lines["input"] = spec.source.locate(("input",))[0]
    types = {i.name: i.type for i in spec.infos}

    def objective(out):
        return spec.loss(out, labels)

    report.rows += check_plan(plan, objective, x, cfg, rng, "network", lines, types)
    if isolated:
        for info in spec.infos:
            if info.layer.multi_input:
                report.rows += check_multi_input(info, cfg, rng, lines[info.name])
                continue
            single = layer_plan(info.layer, info.in_shape, "float64", cfg.seed, info.name,
                                options=options)
            report.rows += check_layer_plan(single, cfg, rng, info.type, lines[info.name])
    return report


def generic_values(plan: Plan, rng, eps: float = 1e-6) -> list[str]:
    """Redraw, in place, every parameter tensor whose entries are all (nearly) one value c:
    each entry becomes c +- u * max(1, |c|) with u uniform in [0.1, 0.5] and a random sign.
    Returns the names of the tensors redrawn. Tensors drawn at random by their init are kept."""
    redrawn = []
    for key, value in plan.params.items():
        if value.size == 0 or np.ptp(value) > 100 * eps:
            continue
        c = float(np.mean(value))
        u = rng.uniform(0.1, 0.5, value.shape) * rng.choice((-1.0, 1.0), value.shape)
        value[...] = c + u * max(1.0, abs(c))
        redrawn.append(key)
    return redrawn


def check_multi_input(info, cfg, rng, line=None) -> list[Row]:
    """Check a multi-input layer (add, concat) alone, on inputs of the shapes it has in the
    network. A plan has one input, so the layer reads its inputs as parts of one flat input
    (see _Part); the input row covers all of them."""
    parts, start = [], 0
    for k, shape in enumerate(info.in_shape):
        parts.append(_Part(name=f"part{k}", inputs=["input"], start=start, shape=tuple(shape)))
        start += math.prod(shape)
    layer = info.layer.model_copy(update={"name": info.name,
                                          "inputs": [p.name for p in parts]})
    plan = Plan(infer((start,), [*parts, layer]), "float64", np.random.default_rng(cfg.seed))
    rows = check_plan(plan, *_projection(plan, cfg, rng), cfg, rng, "layer",
                      {"part0": line, info.name: line}, {"part0": info.type,
                                                         info.name: info.type})
    for row in rows:
        row.layer = info.name  # the input row is named after the plan's first step
    return rows


class _Part(Layer):
    """For gradient checks only (not a spec layer): the values [start, start + size) of a flat
    input, as a tensor of `shape`. dL/dx is dy there and zero elsewhere."""

    type: Literal["part"] = "part"
    start: int
    shape: tuple[int, ...]

    def output_shape(self, in_shape):
        return self.shape

    def build(self, ctx):
        a, b = self.start, self.start + math.prod(self.shape)

        def forward(x, train):
            return x[a:b].reshape(*self.shape, x.shape[-1])  # (D, N) -> (*shape, N), a view

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            dx = ctx.ws("dx", (ctx.in_shape[0], dy.shape[-1]), zero=True)  # zero outside a:b
            dx[a:b] = dy.reshape(b - a, -1)
            return dx

        return forward, backward


def _projection(plan, cfg, rng):
    """(objective sum(y * R) with a fixed random R, a random input) for a one-layer check."""
    x = rng.standard_normal((cfg.batch_size, *plan.in_shape))
    projection = rng.standard_normal((cfg.batch_size, *plan.out_shape))

    def objective(out):
        return float(np.sum(out * projection)), projection.copy()

    return objective, x


def check_layer_plan(plan: Plan, cfg, rng, type_: str, line=None) -> list[Row]:
    """Check a one-layer plan on the objective sum(y * R) with a fixed random R."""
    objective, x = _projection(plan, cfg, rng)
    name = plan.steps[0].name
    return check_plan(plan, objective, x, cfg, rng, "layer", {name: line}, {name: type_})


def check_plan(plan: Plan, objective, x, cfg, rng, scope="network", lines=None,
               types=None) -> list[Row]:
    """Compare plan.backward with central differences of objective(plan.forward(x)).

    `objective(out) -> (loss, dloss/dout)`; out and x are in PyTorch layout. Returns one Row
    for the input and one per parameter tensor.
    """
    lines, types = lines or {}, types or {}
    x = np.array(x, dtype=np.float64)
    step = plan.noise.step

    def run():
        plan.noise.step = step  # same dropout masks every time
        loss, dout = objective(plan.forward(x, train=True))
        regions = [s.ctx.region.copy() for s in plan.steps if s.ctx.region is not None]
        return loss, dout, regions

    _, dout, regions0 = run()
    dx = plan.backward(dout)
    analytic = {"input": (x, dx)}
    for key, value in plan.params.items():
        analytic[key] = (value, plan.grads[key].copy())

    rows = []
    for key, (array, grad) in analytic.items():
        if key == "input":  # the network's input, or the input of the one layer
            layer = plan.steps[0].name if scope == "layer" else "input"
            tensor = "input"
        else:
            layer, _, tensor = key.rpartition(".")
        row = Row(scope, layer, types.get(layer, ""), tensor, lines.get(layer))
        worst = -1.0
        for flat in _entries(array.size, cfg.max_entries, rng):
            old = array.flat[flat]
            array.flat[flat] = old + cfg.eps
            up, _, regions_up = run()
            array.flat[flat] = old - cfg.eps
            down, _, regions_down = run()
            array.flat[flat] = old
            if not (_same(regions0, regions_up) and _same(regions0, regions_down)):
                row.skipped += 1
                continue
            row.checked += 1
            numeric = (up - down) / (2 * cfg.eps)
            a = grad.flat[flat]
            err = abs(a - numeric)
            ratio = err / (cfg.atol + cfg.rtol * abs(numeric))
            if ratio > worst:
                worst = ratio
                row.abs_err = float(err)
                row.rel_err = float(err / max(abs(a), abs(numeric))) if err else 0.0
                row.index = tuple(int(i) for i in np.unravel_index(flat, array.shape))
            if ratio > 1:
                row.passed = False
        if row.checked == 0:  # nothing compared is no evidence of a correct gradient
            row.passed = False
            row.problem = (
                f"all {row.skipped} sampled entries sit at kinks (a relu, leaky relu or maxpool "
                f"changes piece within +-eps = {cfg.eps:g}), so none was checked; set a "
                f"smaller gradcheck.eps (e.g. --set gradcheck.eps={min(cfg.eps / 100, 1e-6):g})"
                ", or another gradcheck.seed, which draws other inputs and parameter values")
        rows.append(row)
    return rows


def _entries(size: int, limit: int, rng) -> np.ndarray:
    """All flat indices when few, else a sorted seeded sample of `limit` of them."""
    if size <= limit:
        return np.arange(size)
    return np.sort(rng.choice(size, limit, replace=False))


def _same(a: list, b: list) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a, b))
