"""sigmoid: y = 1 / (1 + exp(-x)), as torch.nn.Sigmoid. Any shape.

Stable for large |x|: with e = exp(-|x|) <= 1 (never overflows),
    y = 1 / (1 + e)  where x >= 0,     y = e / (1 + e)  where x < 0,
computed branch-free as y = exp(min(x, 0)) / (1 + exp(-|x|)), accurate to an ulp or so even
where y is tiny (no 1 - y cancellation).
Derivative from the output: dy/dx = y * (1 - y). MACs: 0 (elementwise).
"""

from typing import ClassVar, Literal

import numpy as np

from netspec.nn.layers.base import Layer, register


@register
class Sigmoid(Layer):
    type: Literal["sigmoid"] = "sigmoid"

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({}, (6,))]

    def torch_module(self, info, nn):
        return nn.Sigmoid()

    def build(self, ctx):
        cache = {}

        def forward(x, train):
            y = ctx.ws("y", x.shape)
            num = ctx.ws("num", x.shape)
            np.clip(x, -np.inf, 0, out=num)  # min(x, 0)
            np.exp(num, out=num)  # exp(min(x, 0)): 1 for x >= 0, e for x < 0
            np.abs(x, out=y)
            np.negative(y, out=y)
            np.exp(y, out=y)  # e = exp(-|x|) in (0, 1]
            np.add(y, 1, out=y)
            np.divide(num, y, out=y)  # 1 / (1 + e) for x >= 0, e / (1 + e) for x < 0
            cache["y"] = y
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            y = cache["y"]
            dx = ctx.ws("dx", y.shape)
            np.subtract(1, y, out=dx)
            dx *= y
            dx *= dy  # dL/dx = dy * y * (1 - y)
            return dx

        return forward, backward

    def to_onnx(self, g, x):
        return g.node("Sigmoid", [x])
