"""softmax: y = exp(x) / sum_c exp(x) over the channels (C, H, W) or features (D,), as
torch.nn.Softmax(dim=1).

Internally the class axis is 0: (C, H, W, N) or (D, N), normalised along axis 0.
    y = exp(x - max) / sum exp(x - max)     (stable: the max is subtracted first)
    dL/dx = y * (dy - sum_c dy * y)
A network that ends in softmax gives probabilities, and `cross_entropy` applies its own softmax
to whatever the network gives: the two together are a spec error (see spec/model.py); use
`loss: {type: nll, input: probabilities}` or leave the softmax out. MACs: 0.
"""

from typing import ClassVar, Literal

import numpy as np

from netspec.nn.layers.base import Layer, ShapeError, register


@register
class Softmax(Layer):
    type: Literal["softmax"] = "softmax"

    examples: ClassVar[list] = [({}, (4,)), ({}, (3, 2, 2))]

    def output_shape(self, in_shape):
        if len(in_shape) not in (1, 3):
            raise ShapeError(f"softmax normalises over channels (C, H, W) or features (D,), got "
                             f"{tuple(in_shape)}")
        return in_shape

    def torch_module(self, info, nn):
        return nn.Softmax(dim=1)

    def build(self, ctx):
        cache = {}

        def forward(x, train):
            y = ctx.ws("y", x.shape)
            np.subtract(x, x.max(axis=0, keepdims=True), out=y)
            np.exp(y, out=y)
            y /= y.sum(axis=0, keepdims=True)
            cache["y"] = y
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            y = cache["y"]
            inner = np.einsum("c...,c...->...", dy, y)  # sum_c dy * y, (H, W, N) or (N,)
            dy -= inner
            return np.multiply(dy, y, out=dy)  # dy is dead after us: reuse it

        return forward, backward

    def to_onnx(self, g, x):
        return g.node("Softmax", [x], axis=1)
