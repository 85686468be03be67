"""channel_shuffle: interleave the channels of `groups` groups, as torch.nn.ChannelShuffle
(ShuffleNet). (C, H, W) -> (C, H, W), with C = groups * per.

Channel g * per + i moves to i * groups + g:
    y = x.reshape(groups, per, ...).swapaxes(0, 1).reshape(C, ...)
    dL/dx = dy.reshape(per, groups, ...).swapaxes(0, 1).reshape(C, ...)   (the inverse)
ONNX: Reshape (N, groups, per, H, W), Transpose (0, 2, 1, 3, 4), Reshape (N, C, H, W), which
is how Caffe2 and torch.onnx.export write it and what the importer reads back as this layer.
MACs: 0 (a copy).
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveInt

from netspec.nn.layers.base import Layer, ShapeError, register


@register
class ChannelShuffle(Layer):
    type: Literal["channel_shuffle"] = "channel_shuffle"
    groups: PositiveInt = Field(description="Number of channel groups to interleave.")

    examples: ClassVar[list] = [({"groups": 2}, (4, 2, 3)), ({"groups": 3}, (6, 1, 2))]

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(f"channel_shuffle expects an image input (C, H, W), got "
                             f"{tuple(in_shape)}")
        if in_shape[0] % self.groups:
            raise ShapeError(f"{in_shape[0]} channels do not split into {self.groups} groups; "
                             f"use a channel count divisible by {self.groups}")
        return in_shape

    def torch_module(self, info, nn):
        return nn.ChannelShuffle(self.groups)

    def build(self, ctx):
        c, g = ctx.in_shape[0], self.groups
        per = c // g

        def forward(x, train):
            y = ctx.ws("y", x.shape)
            # (G, per, rest) -> (per, G, rest): y[i * G + g] = x[g * per + i]
            np.copyto(y.reshape(per, g, -1), x.reshape(g, per, -1).swapaxes(0, 1))
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            dx = ctx.ws("dx", dy.shape)
            np.copyto(dx.reshape(g, per, -1), dy.reshape(per, g, -1).swapaxes(0, 1))
            return dx

        return forward, backward

    def to_onnx(self, g, x):
        c, h, w = g.in_shape
        per = c // self.groups
        split = g.node("Reshape", [x, g.constant([0, self.groups, per, h, w], np.int64)])
        swapped = g.node("Transpose", [split], perm=[0, 2, 1, 3, 4])
        return g.node("Reshape", [swapped, g.constant([0, c, h, w], np.int64)])
