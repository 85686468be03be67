"""relu: y = max(x, 0); dy/dx = 1 where x > 0, else 0. Any shape."""

from typing import ClassVar, Literal

import numpy as np

from netspec.nn.layers.base import Layer, register


@register
class ReLU(Layer):
    type: Literal["relu"] = "relu"

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({}, (6,))]

    def torch_module(self, info, nn):
        return nn.ReLU()

    def build(self, ctx):
        cache = {}

        def forward(x, train):
            y = ctx.ws("y", x.shape)
            np.clip(x, 0, np.inf, out=y)  # max(x, 0): clip, which NumPy runs faster
            cache["x"] = x
            if train:
                mask = ctx.ws("mask", x.shape, dtype=bool)
                np.greater(x, 0, out=mask)
                cache["mask"] = ctx.region = mask
            else:  # inference needs no mask; a backward after it (rare) makes one
                cache["mask"] = None
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            mask = cache["mask"]
            if mask is None:
                mask = np.greater(cache["x"], 0, out=ctx.ws("mask", dy.shape, dtype=bool))
            return np.multiply(dy, mask, out=dy)  # dy is dead after us: reuse it

        return forward, backward

    def to_onnx(self, g, x):
        return g.node("Relu", [x])
