"""global_avgpool: mean over H and W, (C, H, W) -> (C,); torch's AdaptiveAvgPool2d(1) + Flatten.

Internally (C, H, W, N) -> (C, N):  y[c, n] = mean_{h, w} x[c, h, w, n];
dL/dx[c, h, w, n] = dy[c, n] / (H*W). MACs: 0 (no multiply-accumulates, like avgpool2d).
"""

from typing import ClassVar, Literal

import numpy as np

from netspec.nn.layers.base import Layer, ShapeError, register


@register
class GlobalAvgPool(Layer):
    """Averages each channel over its whole feature map; output is already flat."""

    type: Literal["global_avgpool"] = "global_avgpool"

    examples: ClassVar[list] = [({}, (3, 4, 5)), ({}, (2, 1, 1))]

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(
                f"global_avgpool averages each channel over H and W, so it expects an image "
                f"input (C, H, W), got {tuple(in_shape)}; put it before {{type: flatten}} "
                "(or use no pooling on a flat input)")
        return (in_shape[0],)

    def torch_module(self, info, nn):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def build(self, ctx):
        c, h, w = ctx.in_shape

        def forward(x, train):
            n = x.shape[-1]
            y = ctx.ws("y", (c, n))
            np.mean(x.reshape(c, h * w, n), axis=1, out=y)  # (C, H, W, N) -> (C, H*W, N) -> (C, N)
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            n = dy.shape[-1]
            dx = ctx.ws("dx", (c, h, w, n))
            np.multiply(dy[:, None, None, :], 1.0 / (h * w), out=dx)  # broadcast (C, 1, 1, N)
            return dx

        return forward, backward

    def to_onnx(self, g, x):
        """ReduceMean over H and W without keeping them: (N, C, H, W) -> (N, C)."""
        return g.node("ReduceMean", [x], axes=[2, 3], keepdims=0)
