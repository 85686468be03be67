"""dropout: inverted dropout, as torch.nn.Dropout. Any shape.

Train mode: each entry is kept with probability 1 - p and scaled by 1 / (1 - p), so the expected
output equals the input:  y = x * m,  m = keep / (1 - p),  keep ~ Bernoulli(1 - p);
dL/dx = dy * m (the same mask). Eval mode: identity.
The mask comes from ctx.noise (netspec/kernels/noise.py): a function of the seed, the training step,
this layer and each sample's position in the batch, so worker processes sharing a batch draw
what one process would, and forwards at the same step (the gradient checker's) draw the same.
MACs: 0 (elementwise).
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from netspec.nn.layers.base import Layer, register


@register
class Dropout(Layer):
    type: Literal["dropout"] = "dropout"
    p: float = Field(0.5, ge=0.0, lt=1.0, description="Probability of zeroing an entry.")

    examples: ClassVar[list] = [({}, (2, 3, 3)), ({"p": 0.2}, (8,)), ({"p": 0.0}, (5,))]

    def torch_module(self, info, nn):
        return nn.Dropout(self.p)

    def build(self, ctx):
        scale = 1.0 / (1.0 - self.p)
        cache = {}

        def forward(x, train):
            cache["train"] = train
            if not train:
                return x  # identity (a view, like flatten's)
            n = x.shape[-1]
            u = ctx.ws("u", (n, x.size // max(n, 1)), dtype=np.float32)  # (N, D): sample j in row j
            ctx.noise.uniform(u)
            u = u.T.reshape(x.shape)  # (D, N) -> (..., N), a view
            m = ctx.ws("m", x.shape)
            np.greater_equal(u, self.p, out=m, casting="unsafe")  # keep -> 1.0, drop -> 0.0
            m *= scale
            cache["m"] = m
            y = ctx.ws("y", x.shape)
            return np.multiply(x, m, out=y)

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            if not cache["train"]:
                return dy
            return np.multiply(dy, cache["m"], out=dy)  # dy is dead after us: reuse it

        return forward, backward

    def to_onnx(self, g, x):
        """Left out: dropout is the identity in eval mode, so the next layer reads x."""
        return x
