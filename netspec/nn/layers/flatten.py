"""flatten: (C, H, W) -> (C*H*W,) per sample, in PyTorch's feature order (c, h, w)."""

import math
from typing import ClassVar, Literal

from netspec.nn.layers.base import Layer, register


@register
class Flatten(Layer):
    """Collapses every axis but the batch; free in the (C, H, W, N) internal layout."""

    type: Literal["flatten"] = "flatten"

    examples: ClassVar[list] = [({}, (2, 3, 3)), ({}, (4,))]

    def output_shape(self, in_shape):
        return (math.prod(in_shape),)

    def torch_module(self, info, nn):
        return nn.Flatten()

    def build(self, ctx):
        shape = ctx.in_shape

        def forward(x, train):
            return x.reshape(-1, x.shape[-1])  # (C, H, W, N) -> (C*H*W, N), a view

        def backward(dy, need_dx=True):
            return dy.reshape(*shape, dy.shape[-1]) if need_dx else None  # (D, N) -> (C, H, W, N)

        return forward, backward

    def to_onnx(self, g, x):
        """Flatten(axis=1): (N, C, H, W) -> (N, C*H*W), channel-major as netspec and torch."""
        return g.node("Flatten", [x], axis=1)
