"""avgpool2d: mean over each window (count_include_pad=True, as torch). (C, H, W, N) -> (C, OH, OW, N).

y = (1/K) sum_taps tap(x);  dL/dx gets dy/K added back through every tap (K = KH*KW).
"""

from typing import Literal

import numpy as np

from netspec.layers.base import register
from netspec.layers.pooling import Pool2d, tap


@register
class AvgPool2d(Pool2d):
    type: Literal["avgpool2d"] = "avgpool2d"

    examples = [({"kernel_size": 2}, (2, 4, 4)), ({"kernel_size": 3, "stride": 2, "padding": 1},
                                                   (2, 5, 6))]

    def build(self, ctx):
        c, h, w = ctx.in_shape
        (kh, kw), s, (ph, pw), (oh, ow) = self.geometry(ctx.in_shape)
        scale = 1.0 / (kh * kw)

        def forward(x, train):
            n = x.shape[-1]
            xp = x
            if ph or pw:
                xp = ctx.ws("xp", (c, h + 2 * ph, w + 2 * pw, n), zero=True)
                xp[:, ph:ph + h, pw:pw + w] = x
            y = ctx.ws("y", (c, oh, ow, n))
            np.copyto(y, tap(xp, 0, 0, s, (oh, ow)))
            for i in range(kh):
                for j in range(kw):
                    if i or j:
                        y += tap(xp, i, j, s, (oh, ow))
            y *= scale
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            n = dy.shape[-1]
            dxp = ctx.ws("dxp", (c, h + 2 * ph, w + 2 * pw, n))
            dxp.fill(0)
            dy *= scale  # every input in a window gets dy / K
            for i in range(kh):
                for j in range(kw):
                    tap(dxp, i, j, s, (oh, ow))[...] += dy
            return dxp[:, ph:ph + h, pw:pw + w] if ph or pw else dxp

        return forward, backward
