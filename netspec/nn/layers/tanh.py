"""tanh: y = tanh(x), as torch.nn.Tanh. Any shape.

Derivative from the output: dy/dx = 1 - y^2. np.tanh saturates to +-1 without overflow.
MACs: 0 (elementwise).
"""

from typing import ClassVar, Literal

import numpy as np

from netspec.nn.layers.base import Layer, register


@register
class Tanh(Layer):
    type: Literal["tanh"] = "tanh"

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({}, (6,))]

    def torch_module(self, info, nn):
        return nn.Tanh()

    def build(self, ctx):
        cache = {}

        def forward(x, train):
            y = ctx.ws("y", x.shape)
            np.tanh(x, out=y)
            cache["y"] = y
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            y = cache["y"]
            dx = ctx.ws("dx", y.shape)
            np.multiply(y, y, out=dx)
            np.subtract(1, dx, out=dx)
            dx *= dy  # dL/dx = dy * (1 - y^2)
            return dx

        return forward, backward

    def to_onnx(self, g, x):
        return g.node("Tanh", [x])
