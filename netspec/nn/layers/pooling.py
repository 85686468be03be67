"""Shared geometry of the 2-D pooling layers (maxpool2d, avgpool2d): fields, shape rule, taps.

A pooling window is read as KH*KW strided "taps" of the padded input, one per kernel position:
    tap(i, j)[c, oh, ow, n] = xp[c, oh*sh + i, ow*sw + j, n]
so pooling is a handful of whole-array operations, never a loop over pixels.

When the windows tile the input exactly (stride = kernel, no padding, H = OH*KH, W = OW*KW, the
LeNet case) the taps partition it, and the input reshapes for free to (C, OH, KH, OW, KW, N):
then backward writes every input gradient once, with no zero fill and no accumulation.
"""

from pydantic import model_validator

from netspec.nn.layers.base import IntPair, Layer, NonNegPair, ShapeError, pair


class Pool2d(Layer):
    """Fields and shape rule as torch.nn.MaxPool2d / AvgPool2d (ceil_mode=False)."""

    kernel_size: IntPair
    stride: IntPair | None = None  # defaults to kernel_size
    padding: NonNegPair = (0, 0)

    @model_validator(mode="after")
    def _padding_at_most_half(self):
        (kh, kw), (ph, pw) = pair(self.kernel_size), pair(self.padding)
        if 2 * ph > kh or 2 * pw > kw:
            raise ValueError(f"padding {[ph, pw]} must be at most half the kernel size "
                             f"{[kh, kw]} (as in PyTorch)")
        return self

    def geometry(self, in_shape):
        """(kh, kw), (sh, sw), (ph, pw), (oh, ow) for a (C, H, W) input."""
        k = pair(self.kernel_size)
        s = pair(self.stride) if self.stride is not None else k
        p = pair(self.padding)
        h, w = in_shape[1:]
        oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
        return k, s, p, (oh, ow)

    def written_out(self) -> dict:
        return {"stride": list(self.torch_stride())} if self.stride is None else {}

    def torch_stride(self) -> tuple[int, int]:
        return pair(self.stride) if self.stride is not None else pair(self.kernel_size)

    def tiles(self, in_shape) -> bool:
        """True when the windows partition the input exactly (each input in one window)."""
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = self.geometry(in_shape)
        return ((sh, sw) == (kh, kw) and (ph, pw) == (0, 0)
                and (oh * kh, ow * kw) == tuple(in_shape[1:]))

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(f"{self.type} expects an image input (C, H, W), got "
                             f"{tuple(in_shape)}; pool before {{type: flatten}}")
        (kh, kw), _, (ph, pw), (oh, ow) = self.geometry(in_shape)
        if in_shape[1] + 2 * ph < kh or in_shape[2] + 2 * pw < kw:
            raise ShapeError(f"the {kh}x{kw} window is larger than the padded input "
                             f"{in_shape[1] + 2 * ph}x{in_shape[2] + 2 * pw}, so pooling leaves "
                             "nothing; use a smaller kernel_size or remove a pooling layer")
        return (in_shape[0], oh, ow)


def tap(xp, i, j, stride, out_hw):
    """View of the inputs that kernel position (i, j) sees: (C, OH, OW, N)."""
    (sh, sw), (oh, ow) = stride, out_hw
    return xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


def tiled(x, kernel, out_hw):
    """(C, OH*KH, OW*KW, N) -> view (C, OH, KH, OW, KW, N) of exactly tiling windows."""
    (kh, kw), (oh, ow) = kernel, out_hw
    return x.reshape(x.shape[0], oh, kh, ow, kw, x.shape[-1])
