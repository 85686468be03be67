"""leaky_relu: y = x where x > 0, else negative_slope * x, as torch.nn.LeakyReLU. Any shape.

dy/dx = 1 where x > 0, else negative_slope (torch's choice at x = 0). The kink at 0 is recorded
in ctx.region so the gradient checker can skip steps that cross it. MACs: 0 (elementwise
layers count no multiply-accumulates, like relu and the pools).
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import FiniteFloat

from netspec.nn.layers.base import Layer, register


@register
class LeakyReLU(Layer):
    type: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: FiniteFloat = 0.01

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({"negative_slope": 0.2}, (6,)),
                                ({"negative_slope": -0.5}, (2, 3, 2)),
                                ({"negative_slope": 2.0}, (5,))]  # slope > 1 takes the min

    def torch_module(self, info, nn):
        return nn.LeakyReLU(self.negative_slope)

    def build(self, ctx):
        slope = self.negative_slope
        cache = {}

        def forward(x, train):
            y = ctx.ws("y", x.shape)
            np.multiply(x, slope, out=y)
            # max(x, slope*x) picks x for x > 0 and slope*x for x < 0 when slope <= 1; min when
            # slope > 1. (Cheaper than a masked copy: `where=` ufuncs are much slower.)
            (np.maximum if slope <= 1 else np.minimum)(x, y, out=y)
            neg = ctx.ws("neg", x.shape, dtype=bool)
            np.less_equal(x, 0, out=neg)  # the pieces: x <= 0 takes the slope
            cache["neg"] = ctx.region = neg
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            neg = cache["neg"]
            pos = ctx.ws("pos", dy.shape, dtype=bool)
            np.logical_not(neg, out=pos)
            factor = ctx.ws("factor", dy.shape)  # dy/dx, exactly: 1 where x > 0, else slope
            np.multiply(neg, slope, out=factor)
            np.add(factor, pos, out=factor)
            return np.multiply(dy, factor, out=dy)  # dy is dead after us: reuse it

        return forward, backward

    def to_onnx(self, g, x):
        """LeakyRelu: x if x >= 0 else alpha*x, for any slope (slope > 1 included)."""
        return g.node("LeakyRelu", [x], alpha=self.negative_slope)
