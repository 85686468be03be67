"""Optimizers, simplest first, with torch.optim's exact update rules.

A spec entry (`{type: sgd, lr: 0.02, momentum: 0.9}`) validates the options; `build(params)`
returns an Optimizer that updates the parameter arrays in place. The learning rate is passed to
each `step`, because the schedule owns it.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator


class Optimizer:
    """Updates `params` in place from `grads`; its state round-trips through state_dict().

    When the parameters (and the gradients) are consecutive views of one flat array, as a
    Plan lays them out, each step updates that flat array with a handful of whole-array
    operations instead of a handful per tensor; the arithmetic is the same.
    """

    def __init__(self, spec, params: dict[str, np.ndarray]):
        self.spec = spec
        self.params = params
        self.steps = 0
        self.flat = shared_base(params.values())  # all parameters as one 1-D array, or None
        # slot ("momentum", "exp_avg", ...) -> its flat array, and -> {param name: view}
        self.flat_state: dict[str, np.ndarray | None] = {}
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self._scratch: dict[str, np.ndarray] = {}
        self._grads_seen, self._grads_base = None, None  # see _flat_grads
        for slot in self.slots():
            base = np.zeros_like(self.flat) if self.flat is not None else None
            self.flat_state[slot] = base
            self.state[slot] = (views_like(base, params) if base is not None
                                else {k: np.zeros_like(p) for k, p in params.items()})

    def scratch(self, key: str, like: np.ndarray) -> np.ndarray:
        """A reusable temporary shaped like `like` (no allocation per step)."""
        tmp = self._scratch.get(key)
        if tmp is None or tmp.shape != like.shape or tmp.dtype != like.dtype:
            tmp = self._scratch[key] = np.empty_like(like)
        return tmp

    def slots(self) -> tuple[str, ...]:
        """Names of the per-parameter state arrays this optimizer keeps."""
        return ()

    def update(self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray], lr: float):
        """Update one array of parameters (or the flat arena) in place."""
        raise NotImplementedError

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        self.steps += 1
        flat_grads = self._flat_grads(grads) if self.flat is not None else None
        if flat_grads is not None and flat_grads.shape == self.flat.shape:
            self.update(self.flat, flat_grads, self.flat_state, lr)
            return
        for k, p in self.params.items():
            self.update(p, grads[k], {slot: arrays[k] for slot, arrays in self.state.items()},
                        lr)

    def _flat_grads(self, grads: dict[str, np.ndarray]) -> np.ndarray | None:
        """shared_base(grads), remembered for the dict a Plan passes at every step."""
        if self._grads_seen is not grads or next(iter(grads.values())).base is not (
                self._grads_base):
            self._grads_seen, self._grads_base = grads, shared_base(grads.values())
        return self._grads_base

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat {"<slot>.<param name>": array, "steps": int array} for checkpoints."""
        out = {f"{slot}.{k}": v for slot, arrays in self.state.items() for k, v in arrays.items()}
        out["steps"] = np.array(self.steps)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.steps = int(state["steps"])
        for key, value in state.items():
            if key != "steps":
                slot, name = key.split(".", 1)
                self.state[slot][name][...] = value


def shared_base(arrays) -> np.ndarray | None:
    """The 1-D array that `arrays` tile exactly, in order, as contiguous views; else None."""
    arrays = list(arrays)
    if not arrays:
        return None
    base = arrays[0].base
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    address = base.__array_interface__["data"][0]
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or a.dtype != base.dtype:
            return None
        if a.__array_interface__["data"][0] != address:
            return None
        address += a.nbytes
    return base if address == base.__array_interface__["data"][0] + base.nbytes else None


def views_like(base: np.ndarray, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Split a flat array into views shaped like `arrays`, in order."""
    out, offset = {}, 0
    for k, a in arrays.items():
        out[k] = base[offset:offset + a.size].reshape(a.shape)
        offset += a.size
    return out


OptimizerClass = type[Optimizer]  # named here: inside the specs, `type` is a field


class _OptimSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def build(self, params: dict[str, np.ndarray]) -> Optimizer:
        return self.impl(self, params)


class _SGD(Optimizer):
    def slots(self):
        return ("momentum",) if self.spec.momentum else ()

    def update(self, p, g, state, lr):
        s = self.spec
        d_p = g
        if s.weight_decay:  # d_p = g + wd * p: L2 added to the gradient, as torch
            d_p = np.multiply(p, s.weight_decay, out=self.scratch("d_p", p))
            d_p += g
        if s.momentum:
            buf = state["momentum"]
            buf *= s.momentum  # buf = momentum * buf + d_p   (dampening 0)
            buf += d_p
            if s.nesterov:  # d_p = d_p + momentum * buf
                d_p = np.add(d_p, s.momentum * buf, out=self.scratch("nesterov", p))
            else:
                d_p = buf
        p -= np.multiply(d_p, lr, out=self.scratch("step", p))  # p = p - lr * d_p


class SGD(_OptimSpec):
    """torch.optim.SGD with dampening 0."""

    type: Literal["sgd"] = "sgd"
    lr: PositiveFloat = 0.01
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)
    impl: ClassVar[OptimizerClass] = _SGD

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: true needs a momentum above 0 (e.g. momentum: 0.9)")
        return self


class _Adam(Optimizer):
    decoupled = False  # AdamW decays the weights directly instead of adding to the gradient

    def slots(self):
        return ("exp_avg", "exp_avg_sq")

    def update(self, p, g, state, lr):
        s = self.spec
        b1, b2 = s.betas
        m, v = state["exp_avg"], state["exp_avg_sq"]
        bias1 = 1 - b1**self.steps
        bias2_sqrt = (1 - b2**self.steps) ** 0.5
        if s.weight_decay and self.decoupled:
            p *= 1 - lr * s.weight_decay
        elif s.weight_decay:
            g = g + s.weight_decay * p
        m += (1 - b1) * (g - m)  # m = b1 m + (1 - b1) g   (torch's lerp)
        v *= b2
        v += (1 - b2) * g * g  # v = b2 v + (1 - b2) g^2
        denom = np.sqrt(v) / bias2_sqrt + s.eps
        p -= (lr / bias1) * (m / denom)


class _AdamW(_Adam):
    decoupled = True


class Adam(_OptimSpec):
    """torch.optim.Adam (weight_decay is L2 added to the gradient)."""

    type: Literal["adam"] = "adam"
    lr: PositiveFloat = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: float = Field(0.0, ge=0.0)
    impl: ClassVar[OptimizerClass] = _Adam

    @model_validator(mode="after")
    def _betas_in_range(self):
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {list(self.betas)}")
        return self


class AdamW(Adam):
    """torch.optim.AdamW (decoupled weight decay, default 0.01)."""

    type: Literal["adamw"] = "adamw"
    weight_decay: float = Field(0.01, ge=0.0)
    impl: ClassVar[OptimizerClass] = _AdamW


OptimizerSpec = Annotated[SGD | Adam | AdamW, Field(discriminator="type")]
