"""log_softmax: y = x - log sum_c exp(x) over the channels (C, H, W) or features (D,), as
torch.nn.LogSoftmax(dim=1).

Internally the class axis is 0: (C, H, W, N) or (D, N).
    y = (x - max) - log sum exp(x - max)
    dL/dx = dy - exp(y) * sum_c dy
Pairs with `loss: {type: nll}` (torch's NLLLoss). cross_entropy after it computes the same loss
as without it (log_softmax is idempotent under softmax). MACs: 0.
"""

from typing import ClassVar, Literal

import numpy as np

from netspec.nn.layers.base import Layer, ShapeError, register


@register
class LogSoftmax(Layer):
    type: Literal["log_softmax"] = "log_softmax"

    examples: ClassVar[list] = [({}, (4,)), ({}, (3, 2, 2))]

    def output_shape(self, in_shape):
        if len(in_shape) not in (1, 3):
            raise ShapeError(f"log_softmax normalises over channels (C, H, W) or features "
                             f"(D,), got {tuple(in_shape)}")
        return in_shape

    def torch_module(self, info, nn):
        return nn.LogSoftmax(dim=1)

    def build(self, ctx):
        cache = {}

        def forward(x, train):
            y = ctx.ws("y", x.shape)
            np.subtract(x, x.max(axis=0, keepdims=True), out=y)
            y -= np.log(np.exp(y).sum(axis=0, keepdims=True))
            cache["y"] = y
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            total = dy.sum(axis=0, keepdims=True)  # sum_c dy
            dx = ctx.ws("dx", dy.shape)
            np.exp(cache["y"], out=dx)
            dx *= -total
            dx += dy
            return dx

        return forward, backward

    def to_onnx(self, g, x):
        return g.node("LogSoftmax", [x], axis=1)
