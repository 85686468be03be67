"""maxpool2d: max over each window, as torch.nn.MaxPool2d. (C, H, W, N) -> (C, OH, OW, N).

y = max_taps tap(x), keeping which tap won (the first one on ties, as torch; ties are common
after a relu); dL/dx routes dy to that winning input only. Options as torch: dilation (taps
dh, dw apart) and ceil_mode; padding may also be per side (see pooling.py).

Forward scans the taps in window order with a running max. In training it also keeps `arg`, the
winning tap index as uint8 (the region the gradient checker watches), updated with uint8
arithmetic: since tap k is scanned after every tap below k, "k wins" is arg = max(arg, won*k).
(np.copyto(..., where=) and boolean indexing are several times slower at these sizes.)
An eval-mode forward keeps only the maxima; a backward after it scans the kept input again.
The padded buffer's border (padding and any ceil-mode overhang) is -inf, so it never wins.
Backward writes, per tap, dy * (arg == k) into that tap's view of dx; when the windows tile the
input these writes cover dx exactly once, so no zero fill or accumulation is needed.
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from netspec.nn.layers.base import IntPair, pair, register
from netspec.nn.layers.pooling import Pool2d, tap


@register
class MaxPool2d(Pool2d):
    type: Literal["maxpool2d"] = "maxpool2d"
    dilation: IntPair = Field((1, 1), description="Spacing of the window's taps, as torch's.")

    examples: ClassVar[list] = [
        ({"kernel_size": 2}, (2, 4, 4)),
        ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 6)),
        ({"kernel_size": 2}, (2, 5, 5)),  # floor mode: the last row/column is unused
        ({"kernel_size": 3, "stride": 2, "ceil_mode": True}, (2, 6, 7)),  # Caffe's windows
        ({"kernel_size": 2, "stride": 1, "dilation": [2, 1], "padding": [1, 0]}, (2, 5, 4)),
        ({"kernel_size": 3, "stride": 2, "padding": {"bottom": 1, "right": 1}}, (2, 6, 6)),
    ]

    def dilation_pair(self):
        return pair(self.dilation)

    def torch_module(self, info, nn):
        k, s, p, d = pair(self.kernel_size), self.torch_stride(), self.pads(), self.dilation_pair()
        if self.torch_pads():
            return nn.MaxPool2d(k, s, (p[0], p[2]), d, ceil_mode=self.ceil_mode)
        import torch

        (_, h, w), (hp, wp) = info.in_shape, self.padded_size(info.in_shape)
        border = (p[2], wp - w - p[2], p[0], hp - h - p[0])  # left, right, top, bottom

        class PaddedMaxPool(nn.Module):  # torch pads symmetrically: pad with -inf first
            def forward(self, x):
                x = torch.nn.functional.pad(x, border, value=-float("inf"))
                return torch.nn.functional.max_pool2d(x, k, s, 0, d)

        return PaddedMaxPool()

    def build(self, ctx):
        c, h, w = ctx.in_shape
        (kh, kw), s, (pt, _, pl, _), (oh, ow) = self.geometry(ctx.in_shape)
        d = self.dilation_pair()
        hp, wp = self.padded_size(ctx.in_shape)
        padded = (hp, wp) != (h, w)
        taps = [(i, j) for i in range(kh) for j in range(kw)]
        arg_dtype = np.uint8 if len(taps) <= 256 else np.uint16
        exact = self.tiles(ctx.in_shape)
        cache = {}

        def view(xp, i, j):
            return tap(xp, i, j, s, (oh, ow), d)

        def scan(xp, y):
            """Running max over the taps into y; returns arg, the first winning tap."""
            n = xp.shape[-1]
            np.copyto(y, view(xp, *taps[0]))
            arg = ctx.ws("arg", (c, oh, ow, n), dtype=arg_dtype)  # winning tap, i*kw + j
            won = ctx.ws("won", (c, oh, ow, n), dtype=arg_dtype)  # 0/1: tap k beat all before
            arg.fill(0)
            for k, (i, j) in enumerate(taps[1:], start=1):
                t = view(xp, i, j)
                np.greater(t, y, out=won.view(bool))  # strictly: the first max keeps ties
                np.maximum(y, t, out=y)
                won *= k  # 0 or k
                np.maximum(arg, won, out=arg)  # k > every earlier index: arg = k where won
            return arg

        def forward(x, train):
            n = x.shape[-1]
            xp = x
            if padded:  # (C, Hp, Wp, N), the border -inf (written once: it is never changed)
                xp = ctx.ws("xp", (c, hp, wp, n), fill=-np.inf)
                xp[:, pt:pt + h, pl:pl + w] = x
            y = ctx.ws("y", (c, oh, ow, n))
            if train:
                cache["arg"] = ctx.region = scan(xp, y)
            else:  # inference: the maxima only; backward (rare in eval) finds the winners
                np.copyto(y, view(xp, *taps[0]))
                for i, j in taps[1:]:
                    np.maximum(y, view(xp, i, j), out=y)
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
            dxp = ctx.ws("dxp", (c, hp, wp, n))
            if exact:  # each input is in one window: write every tap's share, no fill
                for k, (i, j) in enumerate(taps):
                    np.equal(arg, k, out=hit)
                    np.multiply(dy, hit, out=view(dxp, i, j))
                return dxp
            dxp.fill(0)  # inputs in no window (floor mode, padding) or in several (overlap)
            share = ctx.ws("share", (c, oh, ow, n))
            for k, (i, j) in enumerate(taps):
                np.equal(arg, k, out=hit)
                np.multiply(dy, hit, out=share)
                view(dxp, i, j)[...] += share
            return dxp[:, pt:pt + h, pl:pl + w] if padded else dxp

        return forward, backward

    def to_onnx(self, g, x):
        """MaxPool; ONNX's padding never wins, as netspec's -inf border."""
        attrs = self.onnx_attrs(g.in_shape)
        if self.dilation_pair() != (1, 1):
            attrs["dilations"] = list(self.dilation_pair())
        return g.node("MaxPool", [x], **attrs)
