"""selu: y = scale * elu(x, alpha) with the fixed self-normalising constants of Klambauer et al.
(alpha = 1.6732632..., scale = 1.0507009...), as torch.nn.SELU. Any shape.

dy/dx = scale where x > 0, else scale * alpha * exp(x) (see elu.py). MACs: 0 (elementwise).
"""

from typing import ClassVar, Literal

from netspec.nn.layers.base import Layer, register
from netspec.nn.layers.elu import elu_closures

ALPHA = 1.6732632423543772848170429916717
SCALE = 1.0507009873554804934193349852946


@register
class SELU(Layer):
    type: Literal["selu"] = "selu"

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({}, (6,))]

    def torch_module(self, info, nn):
        return nn.SELU()

    def build(self, ctx):
        return elu_closures(ctx, ALPHA, SCALE)

    def to_onnx(self, g, x):
        return g.node("Selu", [x], alpha=ALPHA, gamma=SCALE)
