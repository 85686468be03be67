"""hardtanh: y = clip(x, min_val, max_val), as torch.nn.Hardtanh. Any shape.

dy/dx = 1 where min_val < x < max_val, else 0 (torch's choice at the two kinks). Which piece
each entry took is the mask kept in ctx.region, so the gradient checker skips steps that cross
a kink. relu6 (relu6.py) is this layer with the bounds 0 and 6. MACs: 0 (elementwise).
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, FiniteFloat, model_validator

from netspec.nn.layers.base import Layer, register


@register
class Hardtanh(Layer):
    type: Literal["hardtanh"] = "hardtanh"
    min_val: FiniteFloat = Field(-1.0, description="Lower bound of the output.")
    max_val: FiniteFloat = Field(1.0, description="Upper bound of the output.")

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({"min_val": -0.5, "max_val": 2.0}, (6,))]

    @model_validator(mode="after")
    def _ordered(self):
        if not self.min_val < self.max_val:
            raise ValueError(f"min_val ({self.min_val}) must be below max_val ({self.max_val})")
        return self

    def bounds(self) -> tuple[float, float]:
        return self.min_val, self.max_val

    def torch_module(self, info, nn):
        return nn.Hardtanh(self.min_val, self.max_val)

    def build(self, ctx):
        return clip_closures(ctx, *self.bounds())

    def to_onnx(self, g, x):
        """Clip with its bounds as inputs (opset 11 and later)."""
        lo, hi = self.bounds()
        return g.node("Clip", [x, g.constant(lo), g.constant(hi)])


def clip_closures(ctx, lo: float, hi: float):
    """forward/backward of y = clip(x, lo, hi), for hardtanh and relu6."""
    cache = {}

    def forward(x, train):
        y = ctx.ws("y", x.shape)
        np.clip(x, lo, hi, out=y)
        inside = ctx.ws("inside", x.shape, dtype=bool)  # lo < x < hi: the slope-1 piece
        np.less(lo, x, out=inside)
        inside &= x < hi
        cache["inside"] = ctx.region = inside
        return y

    def backward(dy, need_dx=True):
        if not need_dx:
            return None
        return np.multiply(dy, cache["inside"], out=dy)  # dy is dead after us: reuse it

    return forward, backward
