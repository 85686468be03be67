"""prelu: y = x where x > 0, else a * x with a learned slope a, as torch.nn.PReLU.

weight (1,) (one slope for every channel, torch's default) or (C,) with per_channel (a slope per
channel or feature). Internally (C, H, W, N) is viewed as (C, M) and (D, N) as (D, M):
    y = x + (a - 1) * min(x, 0)
    dL/dx = dy where x > 0, else a * dy
    dL/da[c] = sum_m dy[c, m] * min(x[c, m], 0)       (summed over c too for one slope)
The weight starts at 0.25 (torch's default) unless the layer's own `init` says otherwise;
defaults.init does not apply to it (it is a slope, not a fan-scaled weight).
The sign mask is kept in ctx.region (a kink at 0). MACs: 0 (elementwise).
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from netspec.nn.init import Constant, InitSpec, Zeros
from netspec.nn.layers.base import Layer, ShapeError, register


@register
class PReLU(Layer):
    type: Literal["prelu"] = "prelu"
    per_channel: bool = Field(False, description="One learned slope per channel (or feature), "
                                                 "torch's PReLU(num_parameters=C); else one.")
    init: InitSpec | None = Field(None, description="Default: weight {type: constant, value: "
                                                    "0.25}, as torch.")

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({"per_channel": True}, (3, 2, 2)),
                                ({"per_channel": True}, (5,))]

    def output_shape(self, in_shape):
        if len(in_shape) not in (1, 3):
            raise ShapeError(f"prelu expects (C, H, W) or (D,), got {tuple(in_shape)}")
        return in_shape

    def param_shapes(self, in_shape):
        return {"weight": (in_shape[0] if self.per_channel else 1,)}

    def slope_init(self):
        """The slope's scheme: the layer's own `init`, else a constant 0.25 (as torch)."""
        return self.init.weight if self.init and self.init.weight else Constant(value=0.25)

    def written_out(self):
        """The resolved spec names the slope's scheme (defaults.init does not apply here); a
        prelu has no bias, whose scheme is written as the built-in one."""
        bias = (self.init.bias if self.init and self.init.bias else Zeros())
        return {"init": {"weight": self.slope_init().model_dump(mode="json"),
                         "bias": bias.model_dump(mode="json")}}

    def init_params(self, in_shape, rng, defaults):
        own = self.slope_init()
        shape = self.param_shapes(in_shape)["weight"]
        return {"weight": own.sample(shape, (1, 1), rng)}

    def torch_module(self, info, nn):
        return nn.PReLU(info.in_shape[0] if self.per_channel else 1)

    def build(self, ctx):
        c = ctx.in_shape[0]
        a, ga = ctx.params["weight"], ctx.grads["weight"]
        cache = {}

        def forward(x, train):
            x2 = x.reshape(c, -1)  # (C, M)
            neg = ctx.ws("neg", x2.shape)  # min(x, 0)
            np.clip(x2, -np.inf, 0, out=neg)  # min(x, 0)
            y = ctx.ws("y", x.shape)
            np.multiply(neg, (a - 1)[:, None], out=y.reshape(c, -1))  # (C,1) or (1,1) slopes
            y += x
            pos = ctx.ws("pos", x.shape, dtype=bool)
            np.greater(x, 0, out=pos)
            cache.update(neg=neg, pos=pos)
            ctx.region = pos
            return y

        def backward(dy, need_dx=True):
            dy2 = dy.reshape(c, -1)
            per = np.einsum("cm,cm->c", dy2, cache["neg"])  # dL/da per channel, (C,)
            ga[...] = per if len(ga) == c and len(a) == c else per.sum()
            if not need_dx:
                return None
            slope = ctx.ws("slope", dy2.shape)  # 1 where x > 0, else a
            slope[...] = a[:, None]
            np.copyto(slope, 1.0, where=cache["pos"].reshape(c, -1))
            return np.multiply(dy, slope.reshape(dy.shape), out=dy)  # dy is ours to reuse

        return forward, backward

    def to_onnx(self, g, x):
        """PRelu; the slope is stored (C, 1, 1) for images so it broadcasts over (N, C, H, W)."""
        shape = (-1, 1, 1) if len(g.in_shape) == 3 and self.per_channel else (-1,)
        return g.node("PRelu", [x, g.param_as("weight", shape)])
