"""Shared geometry of the 2-D pooling layers (maxpool2d, avgpool2d): fields, shape rule, taps.

A pooling window is read as KH*KW strided "taps" of the padded input, one per kernel position:
    tap(i, j)[c, oh, ow, n] = xp[c, oh*sh + i*dh, ow*sw + j*dw, n]
so pooling is a handful of whole-array operations, never a loop over pixels.

Padding is per side (top, bottom, left, right): `padding: 1`, `padding: [1, 2]` (h, w, both
sides alike, as torch) or `padding: {top: 0, bottom: 1, left: 0, right: 1}` (asymmetric, as
ONNX's `pads` and Caffe's ceil-mode windows need). It may be up to the window's extent minus
one on each side, as ONNX allows (torch allows half the window), so every window holds an
input. Output size, as torch's pooling_output_shape:
    OH = floor_or_ceil((H + pt + pb - dh*(KH-1) - 1) / sh) + 1
and with ceil_mode a last window that would start in the bottom padding (or below) is dropped:
if (OH-1)*sh >= H + pt then OH -= 1. The padded buffer xp is tall enough for the last window,
which in ceil mode may hang past the bottom padding (those cells are never real inputs).

When the windows tile the input exactly (stride = kernel, no padding, no dilation, H = OH*KH,
W = OW*KW, the LeNet case) the taps partition it, and the input reshapes for free to
(C, OH, KH, OW, KW, N): then backward writes every input gradient once, with no zero fill.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from netspec.nn.layers.base import IntPair, Layer, NonNegPair, ShapeError, pair


class Sides(BaseModel):
    """Padding given per side, in pixels: {top, bottom, left, right} (a missing side is 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top: NonNegativeInt = 0
    bottom: NonNegativeInt = 0
    left: NonNegativeInt = 0
    right: NonNegativeInt = 0

    def tuple(self) -> tuple[int, int, int, int]:
        return self.top, self.bottom, self.left, self.right


PADDING_HELP = ("Zero-size border: an int, [h, w] (both sides alike), or per side "
                "{top, bottom, left, right}.")
PoolPadding = Annotated[NonNegPair | Sides, Field(description=PADDING_HELP)]


def sides(padding) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a padding field: an int pair (h, w) or Sides."""
    if isinstance(padding, Sides):
        return padding.tuple()
    ph, pw = pair(padding)
    return ph, ph, pw, pw


def written_padding(t: int, b: int, l: int, r: int):
    """The shortest way to write padding (t, b, l, r): 1, [1, 2], or per side."""
    if (t, l) == (b, r):
        return t if t == l else [t, l]
    return {k: v for k, v in zip(("top", "bottom", "left", "right"), (t, b, l, r)) if v}


class Pool2d(Layer):
    """Fields and shape rule as torch.nn.MaxPool2d / AvgPool2d (padding may also be per side)."""

    kernel_size: IntPair
    stride: IntPair | None = Field(None, description="Default: kernel_size.")
    padding: PoolPadding = (0, 0)
    ceil_mode: bool = Field(False, description="Round the output size up (Caffe's pooling), as "
                                               "torch's ceil_mode; a window that would start in "
                                               "the bottom/right padding is dropped.")

    def dilation_pair(self) -> tuple[int, int]:
        return (1, 1)

    @model_validator(mode="after")
    def _padding_at_most_half(self):
        (kh, kw), (dh, dw) = pair(self.kernel_size), self.dilation_pair()
        eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # extent of the (dilated) window
        t, b, l, r = sides(self.padding)
        if max(t, b) >= eh or max(l, r) >= ew:
            raise ValueError(f"padding {written_padding(t, b, l, r)} must be smaller than the "
                             f"window {[eh, ew]} on every side, so that every window holds an "
                             "input")
        return self

    def torch_pads(self) -> bool:
        """True when torch's own pooling takes this padding: the same on both sides, and at
        most half the window (else the twin pads first)."""
        (kh, kw), (dh, dw) = pair(self.kernel_size), self.dilation_pair()
        t, b, l, r = self.pads()
        return (t, l) == (b, r) and 2 * t <= dh * (kh - 1) + 1 and 2 * l <= dw * (kw - 1) + 1

    def pads(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right)."""
        return sides(self.padding)

    def geometry(self, in_shape):
        """(kh, kw), (sh, sw), (pt, pb, pl, pr), (oh, ow) for a (C, H, W) input."""
        k = pair(self.kernel_size)
        s = pair(self.stride) if self.stride is not None else k
        p = self.pads()
        d = self.dilation_pair()
        h, w = in_shape[1:]
        oh = _out_size(h, k[0], s[0], p[0], p[1], d[0], self.ceil_mode)
        ow = _out_size(w, k[1], s[1], p[2], p[3], d[1], self.ceil_mode)
        return k, s, p, (oh, ow)

    def padded_size(self, in_shape) -> tuple[int, int]:
        """(Hp, Wp) of the padded buffer: the input, its padding, and any ceil-mode overhang."""
        (kh, kw), (sh, sw), (pt, pb, pl, pr), (oh, ow) = self.geometry(in_shape)
        dh, dw = self.dilation_pair()
        h, w = in_shape[1:]
        return (max(h + pt + pb, (oh - 1) * sh + dh * (kh - 1) + 1),
                max(w + pl + pr, (ow - 1) * sw + dw * (kw - 1) + 1))

    def written_out(self) -> dict:
        return {"stride": list(self.torch_stride())} if self.stride is None else {}

    def torch_stride(self) -> tuple[int, int]:
        return pair(self.stride) if self.stride is not None else pair(self.kernel_size)

    def tiles(self, in_shape) -> bool:
        """True when the windows partition the input exactly (each input in one window)."""
        (kh, kw), (sh, sw), p, (oh, ow) = self.geometry(in_shape)
        return ((sh, sw) == (kh, kw) and p == (0, 0, 0, 0) and self.dilation_pair() == (1, 1)
                and (oh * kh, ow * kw) == tuple(in_shape[1:]))

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(f"{self.type} expects an image input (C, H, W), got "
                             f"{tuple(in_shape)}; pool before {{type: flatten}}")
        (kh, kw), _, (pt, pb, pl, pr), (oh, ow) = self.geometry(in_shape)
        dh, dw = self.dilation_pair()
        eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if in_shape[1] + pt + pb < eh or in_shape[2] + pl + pr < ew:
            raise ShapeError(f"the {eh}x{ew} window is larger than the padded input "
                             f"{in_shape[1] + pt + pb}x{in_shape[2] + pl + pr}, so pooling "
                             "leaves nothing; use a smaller kernel_size or remove a pooling layer")
        return (in_shape[0], oh, ow)

    def onnx_attrs(self, in_shape) -> dict:
        """The attributes MaxPool and AveragePool share: kernel, strides, pads, ceil_mode."""
        k, s, (pt, pb, pl, pr), _ = self.geometry(in_shape)
        return {"kernel_shape": list(k), "strides": list(s), "pads": [pt, pl, pb, pr],
                "ceil_mode": int(self.ceil_mode)}


def _out_size(n, k, s, before, after, d, ceil) -> int:
    """Output length of one axis, as torch's pooling_output_shape (with per-side padding)."""
    span = n + before + after - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + before:  # the last window would start in the padding
        out -= 1
    return out


def tap(xp, i, j, stride, out_hw, dilation=(1, 1)):
    """View of the inputs that kernel position (i, j) sees: (C, OH, OW, N)."""
    (sh, sw), (oh, ow), (dh, dw) = stride, out_hw, dilation
    return xp[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]


def tiled(x, kernel, out_hw):
    """(C, OH*KH, OW*KW, N) -> view (C, OH, KH, OW, KW, N) of exactly tiling windows."""
    (kh, kw), (oh, ow) = kernel, out_hw
    return x.reshape(x.shape[0], oh, kh, ow, kw, x.shape[-1])
