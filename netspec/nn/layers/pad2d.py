"""pad2d: a border around each image, as torch's ZeroPad2d, ConstantPad2d, ReflectionPad2d and
ReplicationPad2d. (C, H, W) -> (C, H + top + bottom, W + left + right).

padding: an int, [h, w] (both sides alike), or per side {top, bottom, left, right}.
mode:
  zeros / constant: the border is 0 / `value`;
  reflect: mirrored without repeating the edge (row -i is row i), pad < size;
  replicate: the edge row or column repeated.
Backward takes the centre of dy and folds the border's gradient back onto the inputs it copied
(reflect: dy[top - i] onto row i; replicate: the border's sum onto the edge), one axis at a time.
ONNX: Pad with mode constant / reflect / edge. A Pad before a conv or pool imports as that
layer's padding instead of a pad2d. MACs: 0 (a copy).
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, FiniteFloat

from netspec.nn.layers.base import Layer, ShapeError, register
from netspec.nn.layers.pooling import PoolPadding, sides

ONNX_MODES = {"zeros": "constant", "constant": "constant", "reflect": "reflect",
              "replicate": "edge"}


@register
class Pad2d(Layer):
    type: Literal["pad2d"] = "pad2d"
    padding: PoolPadding
    mode: Literal["zeros", "constant", "reflect", "replicate"] = "zeros"
    value: FiniteFloat = Field(0.0, description="The border's value in mode 'constant'.")

    examples: ClassVar[list] = [
        ({"padding": 1}, (2, 3, 3)),
        ({"padding": {"top": 1, "left": 2, "right": 1}, "mode": "constant", "value": 0.5},
         (2, 2, 3)),
        ({"padding": [2, 1], "mode": "reflect"}, (2, 4, 3)),
        ({"padding": {"top": 2, "bottom": 1, "right": 3}, "mode": "replicate"}, (1, 3, 2)),
    ]

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(f"pad2d pads images (C, H, W), got {tuple(in_shape)}")
        t, b, l, r = sides(self.padding)
        c, h, w = in_shape
        if self.mode == "reflect" and (max(t, b) >= h or max(l, r) >= w):
            raise ShapeError(f"reflect padding must be smaller than the image on each axis: "
                             f"{(t, b, l, r)} (top, bottom, left, right) on {h}x{w}; use "
                             "mode replicate, or less padding")
        return (c, h + t + b, w + l + r)

    def torch_module(self, info, nn):
        t, b, l, r = sides(self.padding)
        border = (l, r, t, b)
        if self.mode == "reflect":
            return nn.ReflectionPad2d(border)
        if self.mode == "replicate":
            return nn.ReplicationPad2d(border)
        return nn.ConstantPad2d(border, self.value if self.mode == "constant" else 0.0)

    def build(self, ctx):
        c, h, w = ctx.in_shape
        t, b, l, r = sides(self.padding)
        value = self.value if self.mode == "constant" else 0.0
        np_mode = {"reflect": "reflect", "replicate": "edge"}.get(self.mode)

        def forward(x, train):
            y = ctx.ws("y", (c, h + t + b, w + l + r, x.shape[-1]))
            if np_mode is None:
                y.fill(value)
                y[:, t:t + h, l:l + w] = x
            else:
                y[...] = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), mode=np_mode)
            return y

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            cols = _fold(dy, 2, l, r, w, self.mode)  # (C, Hp, W, N)
            rows = _fold(cols, 1, t, b, h, self.mode)  # (C, H, W, N)
            dx = ctx.ws("dx", rows.shape)
            np.copyto(dx, rows)
            return dx

        return forward, backward

    def to_onnx(self, g, x):
        t, b, l, r = sides(self.padding)
        pads = g.constant([0, 0, t, l, 0, 0, b, r], np.int64)
        inputs = [x, pads] + ([g.constant(self.value)] if self.mode == "constant" else [])
        return g.node("Pad", inputs, mode=ONNX_MODES[self.mode])


def _fold(dy, axis, before, after, n, mode):
    """dL/d(unpadded) along `axis` from dL/d(padded): the centre, plus the border's gradient
    on the inputs the border copied (a new array)."""
    d = np.moveaxis(dy, axis, 0)
    core = d[before:before + n].copy()
    if mode == "reflect":  # padded row before - i copied row i; before + n - 1 + i row n-1-i
        for i in range(1, before + 1):
            core[i] += d[before - i]
        for i in range(1, after + 1):
            core[n - 1 - i] += d[before + n - 1 + i]
    elif mode == "replicate":  # every border row copied the edge row
        core[0] += d[:before].sum(axis=0)
        core[n - 1] += d[before + n:].sum(axis=0)
    return np.moveaxis(core, 0, axis)
