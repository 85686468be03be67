"""relu6: y = min(max(x, 0), 6), as torch.nn.ReLU6 (MobileNet's activation). Any shape.

hardtanh with the bounds 0 and 6 (see hardtanh.py for the derivative and the kinks). An ONNX
Clip(0, 6) imports as this layer.
"""

from typing import ClassVar, Literal

from netspec.nn.layers.base import Layer, register
from netspec.nn.layers.hardtanh import clip_closures


@register
class ReLU6(Layer):
    type: Literal["relu6"] = "relu6"

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({}, (6,))]

    def torch_module(self, info, nn):
        return nn.ReLU6()

    def build(self, ctx):
        return clip_closures(ctx, 0.0, 6.0)

    def to_onnx(self, g, x):
        return g.node("Clip", [x, g.constant(0.0), g.constant(6.0)])
