"""avgpool2d: mean over each window, as torch.nn.AvgPool2d. (C, H, W, N) -> (C, OH, OW, N).

y[o] = (1/K[o]) sum_taps tap(x)[o];  dL/dx gets dy[o]/K[o] added back through every tap.

K[o] is the window's divisor, as torch computes it. With count_include_pad (the default, as
torch) it counts the padding cells but not a ceil-mode overhang beyond the bottom/right padding;
without, it counts the real inputs only:
    start = o*s - pad_before,  end = min(start + k, n + pad_after)
    K = (end - start) per axis         (count_include_pad)
    K = (min(end, n) - max(start, 0))  (count_include_pad: false)
and the 2-D divisor is the product of the two axes'. Usually every window has K = KH*KW, and a
scalar is used. When the windows tile the input (the common stride = kernel case) backward is one
broadcast multiply into the (C, OH, KH, OW, KW, N) view of dx: no zero fill, no accumulation.
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from netspec.nn.layers.base import pair, register
from netspec.nn.layers.pooling import Pool2d, tap, tiled


@register
class AvgPool2d(Pool2d):
    type: Literal["avgpool2d"] = "avgpool2d"
    count_include_pad: bool = Field(True, description="Divide by the whole window, padding "
                                                      "included (torch's default); false: by "
                                                      "the inputs it covers (ONNX's default).")

    examples: ClassVar[list] = [
        ({"kernel_size": 2}, (2, 4, 4)),
        ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 6)),
        ({"kernel_size": 2}, (2, 5, 5)),  # floor mode: the last row/column is unused
        ({"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}, (2, 5, 6)),
        ({"kernel_size": 3, "stride": 2, "ceil_mode": True}, (2, 6, 7)),  # Caffe's windows
        ({"kernel_size": 3, "stride": 2, "ceil_mode": True, "padding": 1,
          "count_include_pad": False}, (1, 6, 5)),
        ({"kernel_size": 3, "stride": 2, "padding": {"top": 1, "left": 1}}, (2, 6, 6)),
    ]

    def divisor(self, in_shape) -> np.ndarray:
        """K[oh, ow]: what each window's sum is divided by, (OH, OW) float64."""
        (kh, kw), (sh, sw), (pt, pb, pl, pr), (oh, ow) = self.geometry(in_shape)
        rows = _counts(in_shape[1], oh, kh, sh, pt, pb, self.count_include_pad)
        cols = _counts(in_shape[2], ow, kw, sw, pl, pr, self.count_include_pad)
        return np.outer(rows, cols)

    def torch_module(self, info, nn):
        k, s, p = pair(self.kernel_size), self.torch_stride(), self.pads()
        if self.torch_pads():
            return nn.AvgPool2d(k, s, (p[0], p[2]), ceil_mode=self.ceil_mode,
                                count_include_pad=self.count_include_pad)
        import torch

        (_, h, w), (hp, wp) = info.in_shape, self.padded_size(info.in_shape)
        border = (p[2], wp - w - p[2], p[0], hp - h - p[0])  # left, right, top, bottom
        divisor = self.divisor(info.in_shape)

        class PaddedAvgPool(nn.Module):  # torch pads symmetrically: sum windows, then divide
            def forward(self, x):
                x = torch.nn.functional.pad(x, border)
                sums = torch.nn.functional.avg_pool2d(x, k, s) * (k[0] * k[1])
                return sums / torch.as_tensor(divisor, dtype=x.dtype)

        return PaddedAvgPool()

    def build(self, ctx):
        c, h, w = ctx.in_shape
        (kh, kw), s, (pt, _, pl, _), (oh, ow) = self.geometry(ctx.in_shape)
        hp, wp = self.padded_size(ctx.in_shape)
        padded = (hp, wp) != (h, w)
        taps = [(i, j) for i in range(kh) for j in range(kw)]
        exact = self.tiles(ctx.in_shape)
        k = self.divisor(ctx.in_shape)
        uniform = bool(np.all(k == kh * kw))
        scale = 1.0 / (kh * kw) if uniform else (1.0 / k)[None, :, :, None].astype(ctx.dtype)

        def forward(x, train):
            n = x.shape[-1]
            xp = x
            if padded:  # (C, Hp, Wp, N), the border stays 0
                xp = ctx.ws("xp", (c, hp, wp, n), zero=True)
                xp[:, pt:pt + h, pl:pl + w] = x
            y = ctx.ws("y", (c, oh, ow, n))
            first = tap(xp, *taps[0], s, (oh, ow))
            if len(taps) == 1:
                np.copyto(y, first)
            else:
                np.add(first, tap(xp, *taps[1], s, (oh, ow)), out=y)
            for i, j in taps[2:]:
                y += tap(xp, i, j, s, (oh, ow))
            y *= scale  # / K: a scalar, or (1, OH, OW, 1) per window
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
            dxp = ctx.ws("dxp", (c, hp, wp, n))
            dxp.fill(0)  # inputs in no window (floor mode) or in several (overlap)
            dy *= scale  # every input in a window gets dy / K
            for i, j in taps:
                tap(dxp, i, j, s, (oh, ow))[...] += dy
            return dxp[:, pt:pt + h, pl:pl + w] if padded else dxp

        return forward, backward

    def to_onnx(self, g, x):
        """AveragePool with count_include_pad written out (ONNX's default is 0, torch's 1)."""
        return g.node("AveragePool", [x], **self.onnx_attrs(g.in_shape),
                      count_include_pad=int(self.count_include_pad))


def _counts(n, out, k, s, before, after, include_pad) -> np.ndarray:
    """Each window's divisor along one axis (torch's avg_pool2d), (out,) float64."""
    start = np.arange(out) * s - before
    end = np.minimum(start + k, n + after)
    if not include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, n)
    return (end - start).astype(np.float64)
