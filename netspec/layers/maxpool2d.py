"""maxpool2d: max over each window, as torch.nn.MaxPool2d. (C, H, W, N) -> (C, OH, OW, N).

y = max_taps tap(x), keeping which tap won (the first one on ties, as torch);
dL/dx routes dy to that winning input only.
"""

from typing import Literal

import numpy as np

from netspec.layers.base import register
from netspec.layers.pooling import Pool2d, tap


@register
class MaxPool2d(Pool2d):
    type: Literal["maxpool2d"] = "maxpool2d"

    examples = [({"kernel_size": 2}, (2, 4, 4)), ({"kernel_size": 3, "stride": 2, "padding": 1},
                                                   (2, 5, 6))]

    def build(self, ctx):
        c, h, w = ctx.in_shape
        (kh, kw), s, (ph, pw), (oh, ow) = self.geometry(ctx.in_shape)
        cache = {}

        def forward(x, train):
            n = x.shape[-1]
            xp = x
            if ph or pw:
                xp = ctx.ws("xp", (c, h + 2 * ph, w + 2 * pw, n))
                xp.fill(-np.inf)  # padding never wins
                xp[:, ph:ph + h, pw:pw + w] = x
            y = ctx.ws("y", (c, oh, ow, n))
            arg = ctx.ws("arg", (c, oh, ow, n), dtype=np.uint8)  # winning tap index i*kw + j
            won = ctx.ws("won", (c, oh, ow, n), dtype=bool)
            np.copyto(y, tap(xp, 0, 0, s, (oh, ow)))
            arg.fill(0)
            for i in range(kh):
                for j in range(kw):
                    if i or j:
                        t = tap(xp, i, j, s, (oh, ow))
                        np.greater(t, y, out=won)  # strictly greater: the first max wins ties
                        np.copyto(y, t, where=won)
                        arg[won] = i * kw + j
            cache["arg"] = ctx.region = arg
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            n = dy.shape[-1]
            arg = cache["arg"]
            dxp = ctx.ws("dxp", (c, h + 2 * ph, w + 2 * pw, n))
            dxp.fill(0)
            for i in range(kh):
                for j in range(kw):
                    tap(dxp, i, j, s, (oh, ow))[...] += np.where(arg == i * kw + j, dy, 0)
            return dxp[:, ph:ph + h, pw:pw + w] if ph or pw else dxp

        return forward, backward
