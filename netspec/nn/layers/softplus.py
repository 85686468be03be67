"""softplus: y = log(1 + exp(beta x)) / beta, and y = x where beta x > threshold, as
torch.nn.Softplus. Any shape.

Computed stably as (max(beta x, 0) + log1p(exp(-|beta x|))) / beta.
dy/dx = sigmoid(beta x), and 1 above the threshold (as torch). MACs: 0 (elementwise).
ONNX's Softplus is log(exp(x) + 1): beta != 1 is written as Mul, Softplus, Div. ONNX has no
threshold: above it the two differ by at most log1p(exp(-threshold)) / beta (2e-9 for 20), so
a threshold where that exceeds 1e-7 is written out as Where(beta x > threshold, x, softplus).
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveFloat

from netspec.nn.layers.base import Layer, register


@register
class Softplus(Layer):
    type: Literal["softplus"] = "softplus"
    beta: PositiveFloat = Field(1.0, description="Sharpness: log(1 + exp(beta x)) / beta.")
    threshold: PositiveFloat = Field(20.0, description="Above beta x = threshold, y = x.")

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({"beta": 2.0, "threshold": 1.5}, (6,))]

    def torch_module(self, info, nn):
        return nn.Softplus(self.beta, self.threshold)

    def build(self, ctx):
        beta, threshold = self.beta, self.threshold
        cache = {}

        def forward(x, train):
            bx = ctx.ws("bx", x.shape)  # beta x
            np.multiply(x, beta, out=bx)
            y = ctx.ws("y", x.shape)
            np.abs(bx, out=y)
            np.negative(y, out=y)
            np.exp(y, out=y)
            np.log1p(y, out=y)
            y += np.maximum(bx, 0)
            y *= 1.0 / beta
            linear = ctx.ws("linear", x.shape, dtype=bool)  # beta x > threshold: y = x
            np.greater(bx, threshold, out=linear)
            np.copyto(y, x, where=linear)
            cache.update(bx=bx, linear=linear)
            ctx.region = linear  # the slope jumps (by ~1e-9) at the threshold
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            d = ctx.ws("d", dy.shape)  # sigmoid(beta x) = exp(min(bx, 0)) / (1 + exp(-|bx|))
            bx = cache["bx"]
            num = ctx.ws("num", dy.shape)
            np.clip(bx, -np.inf, 0, out=num)  # min(x, 0)
            np.exp(num, out=num)
            np.abs(bx, out=d)
            np.negative(d, out=d)
            np.exp(d, out=d)
            d += 1
            np.divide(num, d, out=d)
            np.copyto(d, 1.0, where=cache["linear"])
            return np.multiply(dy, d, out=dy)  # dy is dead after us: reuse it

        return forward, backward

    def to_onnx(self, g, x):
        bx = x if self.beta == 1.0 else g.node("Mul", [x, g.constant(self.beta)])
        y = g.node("Softplus", [bx])
        if self.beta != 1.0:
            y = g.node("Div", [y, g.constant(self.beta)])
        if np.log1p(np.exp(-self.threshold)) / self.beta <= 1e-7:
            return y
        return g.node("Where", [g.node("Greater", [bx, g.constant(self.threshold)]), x, y])
