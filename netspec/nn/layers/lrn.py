"""lrn: local response normalisation across channels, as torch.nn.LocalResponseNorm (AlexNet,
GoogLeNet). (C, H, W) -> (C, H, W).

With n = size and the window of channel c being c - n//2 .. c + (n-1)//2 (torch's; clipped at
the ends, where the missing channels count as zeros):
    S[c] = sum_{c' in window(c)} x[c']^2,   s[c] = k + (alpha / n) S[c],   y[c] = x[c] s[c]^-beta
    dL/dx[j] = dy[j] s[j]^-beta
               - (2 alpha beta / n) x[j] sum_{c : j in window(c)} dy[c] x[c] s[c]^(-beta-1)
where j is in window(c) exactly when c is in j - (n-1)//2 .. j + n//2. Both window sums are n
shifted adds over a channel-padded buffer (n is small: 5 in AlexNet and GoogLeNet).
The size must be odd, as in Caffe and onnxruntime: then ONNX's LRN has the same formula and
the same window (for an even size ONNX's window leans the other way, c - (n-1)//2 .. c + n//2).
MACs: 0 (no multiply-accumulate GEMM; a few elementwise passes per channel).
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, FiniteFloat, PositiveFloat, PositiveInt, model_validator

from netspec.nn.layers.base import Layer, ShapeError, register


@register
class LRN(Layer):
    type: Literal["lrn"] = "lrn"
    size: PositiveInt = Field(description="Channels in each window (5 in AlexNet).")
    alpha: FiniteFloat = Field(1e-4, description="Scale of the windowed sum of squares.")
    beta: FiniteFloat = Field(0.75, description="Exponent.")
    k: PositiveFloat = Field(1.0, description="Additive constant (ONNX's bias).")

    examples: ClassVar[list] = [({"size": 3}, (5, 2, 3)), ({"size": 5, "k": 2.0}, (7, 2, 2)),
                                ({"size": 5, "alpha": 0.1, "beta": 0.5}, (3, 2, 2))]

    @model_validator(mode="after")
    def _odd(self):
        if self.size % 2 == 0:
            raise ValueError(f"size must be odd, got {self.size} (as Caffe and onnxruntime: for "
                             f"an even size torch and ONNX centre the window differently); use "
                             f"{self.size - 1} or {self.size + 1}")
        return self

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(f"lrn normalises across the channels of an image (C, H, W), got "
                             f"{tuple(in_shape)}")
        return in_shape

    def torch_module(self, info, nn):
        return nn.LocalResponseNorm(self.size, self.alpha, self.beta, self.k)

    def build(self, ctx):
        n, alpha, beta, k = self.size, self.alpha, self.beta, self.k
        c = ctx.in_shape[0]
        lo, hi = n // 2, (n - 1) // 2  # window(c) = c - lo .. c + hi
        cache = {}

        def window_sum(v, before, out):
            """out[c] = sum_{o < n} vp[c + o], vp = v padded with `before` zero channels in
            front and n - 1 - before behind: (C, ...) -> (C, ...)."""
            vp = ctx.ws(f"pad{before}", (c + n - 1, *v.shape[1:]), zero=True)  # border stays 0
            vp[before:before + c] = v
            np.copyto(out, vp[:c])
            for o in range(1, n):
                out += vp[o:o + c]
            return out

        def forward(x, train):
            sq = ctx.ws("sq", x.shape)
            np.multiply(x, x, out=sq)
            s = ctx.ws("s", x.shape)  # k + alpha/n * S
            window_sum(sq, lo, s)
            s *= alpha / n
            s += k
            p = ctx.ws("p", x.shape)  # s^-beta
            np.power(s, -beta, out=p)
            y = ctx.ws("y", x.shape)
            np.multiply(x, p, out=y)
            cache.update(x=x, s=s, p=p)
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            x, s, p = cache["x"], cache["s"], cache["p"]
            u = ctx.ws("u", x.shape)  # dy x s^(-beta-1) = dy * y / s
            np.multiply(dy, x, out=u)
            u *= p
            u /= s
            t = ctx.ws("t", x.shape)  # sum over the windows that hold j
            window_sum(u, hi, t)
            t *= x
            t *= -2 * alpha * beta / n
            dx = ctx.ws("dx", x.shape)
            np.multiply(dy, p, out=dx)
            dx += t
            return dx

        return forward, backward

    def to_onnx(self, g, x):
        return g.node("LRN", [x], size=self.size, alpha=self.alpha, beta=self.beta, bias=self.k)
