"""gelu: y = x * Phi(x), the Gaussian error linear unit, as torch.nn.GELU. Any shape.

approximate 'none' (exact):  Phi(x) = (1 + erf(x / sqrt 2)) / 2,
    dy/dx = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
approximate 'tanh':  y = x * (1 + tanh(u)) / 2,  u = sqrt(2/pi) * (x + 0.044715 x^3),
    dy/dx = (1 + t) / 2 + x (1 - t^2) / 2 * sqrt(2/pi) * (1 + 3 * 0.044715 x^2),  t = tanh(u)
NumPy has no erf, so the exact form evaluates the C library's erf one value at a time (math.erf:
exact, but tens of nanoseconds per value); the tanh form is whole-array and fast.
ONNX: opset 17 has no Gelu node, so both forms are written out (Div, Erf, Add, Mul, Mul as
torch.onnx.export writes them); the importer recognises either by evaluating the chain.
MACs: 0 (elementwise).
"""

import math
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from netspec.nn.layers.base import Layer, register

_erf = np.vectorize(math.erf, otypes=[np.float64])
SQRT_2_PI = math.sqrt(2.0 / math.pi)
C = 0.044715


@register
class GELU(Layer):
    type: Literal["gelu"] = "gelu"
    approximate: Literal["none", "tanh"] = Field(
        "none", description="'none': x * Phi(x) with erf (exact); 'tanh': the tanh formula.")

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({"approximate": "tanh"}, (6,))]

    def torch_module(self, info, nn):
        return nn.GELU(approximate=self.approximate)

    def build(self, ctx):
        cache = {}

        def forward(x, train):
            y = ctx.ws("y", x.shape)
            cache["x"] = x
            if self.approximate == "tanh":
                t = ctx.ws("t", x.shape)  # tanh(sqrt(2/pi) * (x + C x^3))
                np.multiply(x, x, out=t)
                t *= C * SQRT_2_PI
                t += SQRT_2_PI
                t *= x
                np.tanh(t, out=t)
                np.add(t, 1.0, out=y)
                y *= x
                y *= 0.5
                cache["t"] = t
            else:
                cdf = ctx.ws("cdf", x.shape)  # Phi(x)
                cdf[...] = _erf(x * (1 / math.sqrt(2.0)))
                cdf += 1.0
                cdf *= 0.5
                np.multiply(x, cdf, out=y)
                cache["cdf"] = cdf
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            x = cache["x"]
            d = ctx.ws("d", x.shape)  # dy/dx
            if self.approximate == "tanh":
                t = cache["t"]
                np.multiply(x, x, out=d)
                d *= 3 * C
                d += 1.0
                d *= SQRT_2_PI * 0.5
                d *= x
                d *= 1.0 - t * t  # x (1 - t^2) / 2 * sqrt(2/pi) (1 + 3C x^2)
                d += 0.5 * (1.0 + t)
            else:
                np.multiply(x, x, out=d)
                d *= -0.5
                np.exp(d, out=d)
                d *= x / math.sqrt(2 * math.pi)  # x phi(x)
                d += cache["cdf"]
            return np.multiply(dy, d, out=dy)  # dy is dead after us: reuse it

        return forward, backward

    def to_onnx(self, g, x):
        """The formula as nodes (opset 17 has no Gelu)."""
        if self.approximate == "tanh":
            cube = g.node("Mul", [g.node("Mul", [x, x]), x])
            inner = g.node("Add", [x, g.node("Mul", [cube, g.constant(C)])])
            t = g.node("Tanh", [g.node("Mul", [inner, g.constant(SQRT_2_PI)])])
            half = g.node("Mul", [g.node("Add", [t, g.constant(1.0)]), g.constant(0.5)])
            return g.node("Mul", [x, half])
        erf = g.node("Erf", [g.node("Div", [x, g.constant(math.sqrt(2.0))])])
        half = g.node("Mul", [g.node("Add", [erf, g.constant(1.0)]), g.constant(0.5)])
        return g.node("Mul", [x, half])
