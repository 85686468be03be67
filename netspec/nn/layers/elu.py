"""elu: y = x where x > 0, else alpha * (exp(x) - 1), as torch.nn.ELU. Any shape.

dy/dx = 1 where x > 0, else alpha * exp(x) = y + alpha (computed from the output, as torch).
For alpha != 1 the slope jumps at 0: the sign mask is kept in ctx.region so the gradient checker
skips steps that cross it. MACs: 0 (elementwise).
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, FiniteFloat

from netspec.nn.layers.base import Layer, register


@register
class ELU(Layer):
    type: Literal["elu"] = "elu"
    alpha: FiniteFloat = Field(1.0, description="Value the output approaches for large negative "
                                                "inputs is -alpha.")

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({"alpha": 0.5}, (6,))]

    def torch_module(self, info, nn):
        return nn.ELU(self.alpha)

    def build(self, ctx):
        return elu_closures(ctx, self.alpha, 1.0)

    def to_onnx(self, g, x):
        return g.node("Elu", [x], alpha=self.alpha)


def elu_closures(ctx, alpha: float, scale: float):
    """forward/backward of y = scale * (x if x > 0 else alpha * (exp(x) - 1)), for elu and
    selu (scale 1 for elu)."""
    cache = {}

    def forward(x, train):
        pos = ctx.ws("pos", x.shape, dtype=bool)
        np.greater(x, 0, out=pos)
        e = ctx.ws("e", x.shape)  # scale * alpha * exp(min(x, 0)): dy/dx where x <= 0
        np.clip(x, -np.inf, 0, out=e)  # min(x, 0)
        np.exp(e, out=e)
        e *= scale * alpha
        y = ctx.ws("y", x.shape)
        np.subtract(e, scale * alpha, out=y)  # the negative piece, scale * alpha * (e^x - 1)
        np.copyto(y, x * scale if scale != 1 else x, where=pos)
        cache.update(pos=pos, e=e)
        ctx.region = pos
        return y

    def backward(dy, need_dx=True):
        if not need_dx:
            return None
        slope = ctx.ws("slope", dy.shape)  # scale where x > 0, else scale * alpha * exp(x)
        np.copyto(slope, cache["e"])
        np.copyto(slope, scale, where=cache["pos"])
        return np.multiply(dy, slope, out=dy)  # dy is dead after us: reuse it

    return forward, backward
