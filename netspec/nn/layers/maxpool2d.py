"""maxpool2d: max over each window, as torch.nn.MaxPool2d. (C, H, W, N) -> (C, OH, OW, N).

y = max_taps tap(x), keeping which tap won (the first one on ties, as torch; ties are common
after a relu); dL/dx routes dy to that winning input only.

Forward scans the taps in window order with a running max. In training it also keeps `arg`, the
winning tap index as uint8 (the region the gradient checker watches), updated with uint8
arithmetic: since tap k is scanned after every tap below k, "k wins" is arg = max(arg, won*k).
(np.copyto(..., where=) and boolean indexing are several times slower at these sizes.)
An eval-mode forward keeps only the maxima; a backward after it scans the kept input again.
Backward writes, per tap, dy * (arg == k) into that tap's view of dx; when the windows tile the
input these writes cover dx exactly once, so no zero fill or accumulation is needed.
"""

from typing import ClassVar, Literal

import numpy as np

from netspec.nn.layers.base import pair, register
from netspec.nn.layers.pooling import Pool2d, tap


@register
class MaxPool2d(Pool2d):
    type: Literal["maxpool2d"] = "maxpool2d"

    examples: ClassVar[list] = [
        ({"kernel_size": 2}, (2, 4, 4)),
        ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 6)),
        ({"kernel_size": 2}, (2, 5, 5)),  # floor mode: the last row/column is unused
    ]

    def torch_module(self, info, nn):
        return nn.MaxPool2d(pair(self.kernel_size), self.torch_stride(), pair(self.padding))

    def build(self, ctx):
        c, h, w = ctx.in_shape
        (kh, kw), s, (ph, pw), (oh, ow) = self.geometry(ctx.in_shape)
        taps = [(i, j) for i in range(kh) for j in range(kw)]
        arg_dtype = np.uint8 if len(taps) <= 256 else np.uint16
        exact = self.tiles(ctx.in_shape)
        cache = {}

        def scan(xp, y):
            """Running max over the taps into y; returns arg, the first winning tap."""
            n = xp.shape[-1]
            np.copyto(y, tap(xp, *taps[0], s, (oh, ow)))
            arg = ctx.ws("arg", (c, oh, ow, n), dtype=arg_dtype)  # winning tap, i*kw + j
            won = ctx.ws("won", (c, oh, ow, n), dtype=arg_dtype)  # 0/1: tap k beat all before
            arg.fill(0)
            for k, (i, j) in enumerate(taps[1:], start=1):
                t = tap(xp, i, j, s, (oh, ow))
                np.greater(t, y, out=won.view(bool))  # strictly: the first max keeps ties
                np.maximum(y, t, out=y)
                won *= k  # 0 or k
                np.maximum(arg, won, out=arg)  # k > every earlier index: arg = k where won
            return arg

        def forward(x, train):
            n = x.shape[-1]
            xp = x
            if ph or pw:
                xp = ctx.ws("xp", (c, h + 2 * ph, w + 2 * pw, n))
                xp[:, :ph], xp[:, ph + h:] = -np.inf, -np.inf  # padding never wins
                xp[:, :, :pw], xp[:, :, pw + w:] = -np.inf, -np.inf
                xp[:, ph:ph + h, pw:pw + w] = x
            y = ctx.ws("y", (c, oh, ow, n))
            if train:
                cache["arg"] = ctx.region = scan(xp, y)
            else:  # inference: the maxima only; backward (rare in eval) finds the winners
                np.copyto(y, tap(xp, *taps[0], s, (oh, ow)))
                for i, j in taps[1:]:
                    np.maximum(y, tap(xp, i, j, s, (oh, ow)), out=y)
                cache["arg"] = None
            cache["xp"] = xp
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            n = dy.shape[-1]
            arg = cache["arg"]
            if arg is None:  # the forward was in eval mode: find the winners now
                arg = scan(cache["xp"], ctx.ws("y_again", (c, oh, ow, n)))
            hit = ctx.ws("hit", (c, oh, ow, n), dtype=bool)
            dxp = ctx.ws("dxp", (c, h + 2 * ph, w + 2 * pw, n))
            if exact:  # each input is in one window: write every tap's share, no fill
                for k, (i, j) in enumerate(taps):
                    np.equal(arg, k, out=hit)
                    np.multiply(dy, hit, out=tap(dxp, i, j, s, (oh, ow)))
                return dxp
            dxp.fill(0)  # inputs in no window (floor mode, padding) or in several (overlap)
            share = ctx.ws("share", (c, oh, ow, n))
            for k, (i, j) in enumerate(taps):
                np.equal(arg, k, out=hit)
                np.multiply(dy, hit, out=share)
                tap(dxp, i, j, s, (oh, ow))[...] += share
            return dxp[:, ph:ph + h, pw:pw + w] if ph or pw else dxp

        return forward, backward

    def to_onnx(self, g, x):
        """MaxPool; ONNX's padding never wins, as netspec's -inf border."""
        k, s, (ph, pw), _ = self.geometry(g.in_shape)
        return g.node("MaxPool", [x], kernel_shape=list(k), strides=list(s),
                      pads=[ph, pw, ph, pw], ceil_mode=0)
