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
    """Updates `params` in place from `grads`; its state round-trips through state_dict()."""

    def __init__(self, spec, params: dict[str, np.ndarray]):
        self.spec = spec
        self.params = params
        self.steps = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}  # slot -> param name -> array

    def _slot(self, slot: str) -> dict[str, np.ndarray]:
        if slot not in self.state:
            self.state[slot] = {k: np.zeros_like(p) for k, p in self.params.items()}
        return self.state[slot]

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat {"<slot>.<param name>": array, "steps": int array} for checkpoints."""
        out = {f"{slot}.{k}": v for slot, arrays in self.state.items() for k, v in arrays.items()}
        out["steps"] = np.array(self.steps)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.steps = int(state["steps"])
        self.state = {}
        for key, value in state.items():
            if key == "steps":
                continue
            slot, name = key.split(".", 1)
            self._slot(slot)[name][...] = value


OptimizerClass = type[Optimizer]  # named here: inside the specs, `type` is a field


class _OptimSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def build(self, params: dict[str, np.ndarray]) -> Optimizer:
        return self.impl(self, params)


class _SGD(Optimizer):
    def step(self, grads, lr):
        s = self.spec
        self.steps += 1
        for k, p in self.params.items():
            d_p = grads[k]
            if s.weight_decay:
                d_p = d_p + s.weight_decay * p  # L2 added to the gradient, as torch
            if s.momentum:
                buf = self._slot("momentum")[k]
                buf *= s.momentum  # buf = momentum * buf + d_p   (dampening 0)
                buf += d_p
                d_p = d_p + s.momentum * buf if s.nesterov else buf
            p -= lr * d_p


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

    def step(self, grads, lr):
        s = self.spec
        b1, b2 = s.betas
        self.steps += 1
        m, v = self._slot("exp_avg"), self._slot("exp_avg_sq")
        bias1 = 1 - b1**self.steps
        bias2_sqrt = (1 - b2**self.steps) ** 0.5
        for k, p in self.params.items():
            g = grads[k]
            if s.weight_decay and self.decoupled:
                p *= 1 - lr * s.weight_decay
            elif s.weight_decay:
                g = g + s.weight_decay * p
            m[k] += (1 - b1) * (g - m[k])  # m = b1 m + (1 - b1) g   (torch's lerp)
            v[k] *= b2
            v[k] += (1 - b2) * g * g  # v = b2 v + (1 - b2) g^2
            denom = np.sqrt(v[k]) / bias2_sqrt + s.eps
            p -= (lr / bias1) * (m[k] / denom)


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
