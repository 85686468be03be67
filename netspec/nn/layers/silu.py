"""silu: y = x * sigmoid(x) (swish), as torch.nn.SiLU. Any shape.

dy/dx = s + x s (1 - s) = s (1 + x (1 - s)),  s = sigmoid(x), computed stably as in
sigmoid.py. ONNX: Sigmoid then Mul (opset 17 has no SiLU node); the importer reads the pair
x * Sigmoid(x) back as silu. MACs: 0 (elementwise).
"""

from typing import ClassVar, Literal

import numpy as np

from netspec.nn.layers.base import Layer, register


@register
class SiLU(Layer):
    type: Literal["silu"] = "silu"

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({}, (6,))]

    def torch_module(self, info, nn):
        return nn.SiLU()

    def build(self, ctx):
        cache = {}

        def forward(x, train):
            s = ctx.ws("s", x.shape)  # sigmoid(x) = exp(min(x, 0)) / (1 + exp(-|x|))
            num = ctx.ws("num", x.shape)
            np.clip(x, -np.inf, 0, out=num)  # min(x, 0)
            np.exp(num, out=num)
            np.abs(x, out=s)
            np.negative(s, out=s)
            np.exp(s, out=s)
            s += 1
            np.divide(num, s, out=s)
            y = ctx.ws("y", x.shape)
            np.multiply(x, s, out=y)
            cache.update(x=x, s=s)
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            x, s = cache["x"], cache["s"]
            d = ctx.ws("d", x.shape)  # s (1 + x (1 - s))
            np.subtract(1, s, out=d)
            d *= x
            d += 1
            d *= s
            return np.multiply(dy, d, out=dy)  # dy is dead after us: reuse it

        return forward, backward

    def to_onnx(self, g, x):
        return g.node("Mul", [x, g.node("Sigmoid", [x])])
