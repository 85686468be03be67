"""Parameter initialisation schemes, with PyTorch's formulas for fans and gains.

A scheme is written as a bare name (`kaiming_normal`) or as a mapping with its parameters
(`{type: normal, std: 0.01}`). Fans follow `torch.nn.init._calculate_fan_in_and_fan_out`:
fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field. A layer passes the
fans of its weight to every one of its tensors, so a fan-based scheme also works for a bias.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


class Scheme(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def sample(self, shape, fans, rng: np.random.Generator) -> np.ndarray:
        """A float64 array of `shape`; `fans` is (fan_in, fan_out) of the layer's weight."""
        raise NotImplementedError


def fans_of(weight_shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight, as torch computes them: (out, in, *kernel)."""
    receptive = math.prod(weight_shape[2:])
    return weight_shape[1] * receptive, weight_shape[0] * receptive


def gain(nonlinearity: str, a: float = 0.0) -> float:
    """torch.nn.init.calculate_gain."""
    if nonlinearity in ("linear", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    return math.sqrt(2.0 / (1 + a**2))  # leaky_relu with negative slope a


Nonlinearity = Literal["relu", "leaky_relu", "linear", "sigmoid", "tanh"]


class Zeros(Scheme):
    type: Literal["zeros"] = "zeros"

    def sample(self, shape, fans, rng):
        return np.zeros(shape)


class Ones(Scheme):
    type: Literal["ones"] = "ones"

    def sample(self, shape, fans, rng):
        return np.ones(shape)


class Constant(Scheme):
    type: Literal["constant"] = "constant"
    value: float

    def sample(self, shape, fans, rng):
        return np.full(shape, self.value)


class Normal(Scheme):
    type: Literal["normal"] = "normal"
    mean: float = 0.0
    std: float = Field(1.0, ge=0)

    def sample(self, shape, fans, rng):
        return self.mean + self.std * rng.standard_normal(shape)


class Uniform(Scheme):
    type: Literal["uniform"] = "uniform"
    low: float = 0.0
    high: float = 1.0

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def sample(self, shape, fans, rng):
        return rng.uniform(self.low, self.high, shape)


class KaimingNormal(Scheme):
    """std = gain / sqrt(fan)  (He et al. 2015)."""

    type: Literal["kaiming_normal"] = "kaiming_normal"
    mode: Literal["fan_in", "fan_out"] = "fan_in"
    nonlinearity: Nonlinearity = "relu"
    a: float = 0.0  # negative slope, used when nonlinearity is leaky_relu

    def sample(self, shape, fans, rng):
        fan = fans[0] if self.mode == "fan_in" else fans[1]
        return gain(self.nonlinearity, self.a) / math.sqrt(fan) * rng.standard_normal(shape)


class KaimingUniform(Scheme):
    """bound = gain * sqrt(3 / fan)."""

    type: Literal["kaiming_uniform"] = "kaiming_uniform"
    mode: Literal["fan_in", "fan_out"] = "fan_in"
    nonlinearity: Nonlinearity = "relu"
    a: float = 0.0

    def sample(self, shape, fans, rng):
        fan = fans[0] if self.mode == "fan_in" else fans[1]
        bound = gain(self.nonlinearity, self.a) * math.sqrt(3.0 / fan)
        return rng.uniform(-bound, bound, shape)


class XavierNormal(Scheme):
    """std = gain * sqrt(2 / (fan_in + fan_out))  (Glorot & Bengio 2010)."""

    type: Literal["xavier_normal"] = "xavier_normal"
    gain: float = Field(1.0, gt=0)

    def sample(self, shape, fans, rng):
        return self.gain * math.sqrt(2.0 / sum(fans)) * rng.standard_normal(shape)


class XavierUniform(Scheme):
    """bound = gain * sqrt(6 / (fan_in + fan_out))."""

    type: Literal["xavier_uniform"] = "xavier_uniform"
    gain: float = Field(1.0, gt=0)

    def sample(self, shape, fans, rng):
        bound = self.gain * math.sqrt(6.0 / sum(fans))
        return rng.uniform(-bound, bound, shape)


SCHEMES = {
    cls.model_fields["type"].default: cls
    for cls in (Zeros, Ones, Constant, Normal, Uniform,
                KaimingNormal, KaimingUniform, XavierNormal, XavierUniform)
}


def _bare_name(value):
    """Let `kaiming_normal` stand for `{type: kaiming_normal}`."""
    return {"type": value} if isinstance(value, str) else value


_Tagged = Annotated[
    Union[tuple(SCHEMES.values())],  # noqa: UP007 -- built from the registry at runtime
    Field(discriminator="type"),
]
# Schemes that need no parameters, so their bare name is enough (all but `constant`).
BareName = Literal[tuple(name for name, cls in SCHEMES.items()
                         if not any(f.is_required() for f in cls.model_fields.values()))]

# The JSON Schema (for editors) offers both spellings: a bare name, or a tagged mapping.
InitScheme = Annotated[
    _Tagged,
    BeforeValidator(_bare_name, json_schema_input_type=BareName | _Tagged),
]


class InitSpec(BaseModel):
    """Per-tensor schemes of one layer; a missing entry falls back to `defaults.init`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: InitScheme | None = None
    bias: InitScheme | None = None
