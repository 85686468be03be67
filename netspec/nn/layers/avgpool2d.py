"""avgpool2d: mean over each window (count_include_pad=True, as torch).

(C, H, W, N) -> (C, OH, OW, N).

y = (1/K) sum_taps tap(x);  dL/dx gets dy/K added back through every tap (K = KH*KW).
When the windows tile the input (the common stride = kernel case) backward is one broadcast
multiply into the (C, OH, KH, OW, KW, N) view of dx: no zero fill, no accumulation.
"""

from typing import ClassVar, Literal

import numpy as np

from netspec.nn.layers.base import pair, register
from netspec.nn.layers.pooling import Pool2d, tap, tiled


@register
class AvgPool2d(Pool2d):
    type: Literal["avgpool2d"] = "avgpool2d"

    examples: ClassVar[list] = [
        ({"kernel_size": 2}, (2, 4, 4)),
        ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 6)),
        ({"kernel_size": 2}, (2, 5, 5)),  # floor mode: the last row/column is unused
    ]

    def torch_module(self, info, nn):
        return nn.AvgPool2d(pair(self.kernel_size), self.torch_stride(), pair(self.padding),
                            count_include_pad=True)

    def build(self, ctx):
        c, h, w = ctx.in_shape
        (kh, kw), s, (ph, pw), (oh, ow) = self.geometry(ctx.in_shape)
        taps = [(i, j) for i in range(kh) for j in range(kw)]
        exact = self.tiles(ctx.in_shape)
        scale = 1.0 / (kh * kw)

        def forward(x, train):
            n = x.shape[-1]
            xp = x
            if ph or pw:
                xp = ctx.ws("xp", (c, h + 2 * ph, w + 2 * pw, n), zero=True)  # border stays 0
                xp[:, ph:ph + h, pw:pw + w] = x
            y = ctx.ws("y", (c, oh, ow, n))
            first = tap(xp, *taps[0], s, (oh, ow))
            if len(taps) == 1:
                np.copyto(y, first)
            else:
                np.add(first, tap(xp, *taps[1], s, (oh, ow)), out=y)
            for i, j in taps[2:]:
                y += tap(xp, i, j, s, (oh, ow))
            y *= scale
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            n = dy.shape[-1]
            if exact:  # every input is in exactly one window: dx = dy / K, broadcast
                dx = ctx.ws("dx", (c, h, w, n))
                # (C, OH, 1, OW, 1, N) * scale -> (C, OH, KH, OW, KW, N) view of dx
                np.multiply(dy[:, :, None, :, None, :], scale, out=tiled(dx, (kh, kw), (oh, ow)))
                return dx
            dxp = ctx.ws("dxp", (c, h + 2 * ph, w + 2 * pw, n))
            dxp.fill(0)  # inputs in no window (floor mode) or in several (overlap)
            dy *= scale  # every input in a window gets dy / K
            for i, j in taps:
                tap(dxp, i, j, s, (oh, ow))[...] += dy
            return dxp[:, ph:ph + h, pw:pw + w] if ph or pw else dxp

        return forward, backward

    def to_onnx(self, g, x):
        """AveragePool; count_include_pad=1 because netspec (and torch) divide by KH*KW even
        where the window covers padding, and ONNX's default (0) does not."""
        k, s, (ph, pw), _ = self.geometry(g.in_shape)
        return g.node("AveragePool", [x], kernel_shape=list(k), strides=list(s),
                      pads=[ph, pw, ph, pw], count_include_pad=1, ceil_mode=0)
