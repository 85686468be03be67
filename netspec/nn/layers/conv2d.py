"""conv2d: 2-D cross-correlation, as torch.nn.Conv2d. (C, H, W, N) -> (O, OH, OW, N).

The layer: its schema, shape rule, parameters, PyTorch twin and ONNX mapping. The arithmetic is
in netspec/kernels/conv.py, one object per algorithm (im2col + GEMM; a row-stacked GEMM;
Winograd F(4x4, 3x3); grouped), of which `build` takes the one the plan's options choose for
training. With `groups` G (grouped and depthwise convolutions: ResNeXt, ShuffleNet, MobileNet)
input and output channels split into G groups, each convolved on its own: the weight is
(out_channels, in_channels / G, kh, kw), as torch's, and the groups run as one batched GEMM.
Padding may be per side ({top, bottom, left, right}), as ONNX's pads and TensorFlow's 'SAME'.
"""

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from netspec.kernels import winograd
from netspec.kernels.conv import Geometry, Im2col, WinogradF4, choose, eval_winograd
from netspec.kernels.depthwise import Depthwise
from netspec.kernels.grouped import Grouped
from netspec.kernels.stacked import RowStacked
from netspec.nn.init import InitSpec
from netspec.nn.layers.base import ConvPadding, IntPair, Layer, ShapeError, pair, register
from netspec.nn.layers.pooling import PADDING_HELP, Sides

# The training algorithms a plan's `conv` option may ask for, by name (netspec/kernels/conv.py)
ALGORITHMS = {a.name: a for a in (Im2col, RowStacked, WinogradF4)}


@register
class Conv2d(Layer):
    """weight (out_channels, in_channels, kh, kw), bias (out_channels,)."""

    type: Literal["conv2d"] = "conv2d"
    out_channels: PositiveInt
    kernel_size: IntPair
    stride: IntPair = (1, 1)
    padding: ConvPadding | Sides = Field(
        (0, 0), description=PADDING_HELP.replace("Zero-size", "Zero") + " 'same' keeps the "
                            "size (stride 1), 'valid' is no padding.")
    dilation: IntPair = (1, 1)
    groups: PositiveInt = Field(1, description="Channel groups convolved separately; "
                                               "in_channels for a depthwise conv.")
    bias: bool = True
    init: InitSpec | None = None

    examples: ClassVar[list] = [
        ({"out_channels": 2, "kernel_size": 3}, (2, 5, 5)),
        ({"out_channels": 3, "kernel_size": [3, 2], "stride": 2, "padding": 1}, (2, 6, 5)),
        ({"out_channels": 2, "kernel_size": 2, "padding": "same", "dilation": 2}, (1, 5, 4)),
        ({"out_channels": 2, "kernel_size": 3, "bias": False, "padding": [0, 2]}, (3, 4, 4)),
        # tall enough for the row-stacked training algorithm
        ({"out_channels": 2, "kernel_size": 3, "padding": 1}, (3, 20, 20)),
        ({"out_channels": 3, "kernel_size": 3, "stride": [1, 2], "dilation": [1, 2],
          "padding": [1, 2], "bias": False}, (4, 20, 9)),
        ({"out_channels": 4, "kernel_size": 3, "groups": 2, "padding": 1}, (4, 5, 5)),
        ({"out_channels": 6, "kernel_size": 3, "groups": 3, "stride": 2, "padding": 1,
          "bias": False}, (3, 6, 5)),  # depthwise, channel multiplier 2
        # depthwise (one output channel per input channel): strided, and dilated
        ({"out_channels": 4, "kernel_size": 3, "groups": 4, "stride": 2, "padding": 1},
         (4, 7, 6)),
        ({"out_channels": 3, "kernel_size": [3, 2], "groups": 3, "dilation": [2, 1],
          "padding": {"top": 2, "bottom": 1, "left": 0, "right": 1}, "bias": False}, (3, 6, 5)),
        ({"out_channels": 2, "kernel_size": 3, "stride": 2,
          "padding": {"top": 0, "bottom": 1, "left": 0, "right": 1}}, (2, 6, 6)),
    ]

    @model_validator(mode="after")
    def _same_needs_stride_one(self):
        if self.padding == "same" and pair(self.stride) != (1, 1):
            raise ValueError("padding 'same' needs stride 1 (as in PyTorch); "
                             "give the padding as numbers instead")
        if self.out_channels % self.groups:
            raise ValueError(f"out_channels {self.out_channels} does not split into "
                             f"{self.groups} groups; use a multiple of {self.groups}")
        return self

    def pads(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right); 'same' puts any odd extra pixel at the bottom/right."""
        if self.padding == "valid":
            return 0, 0, 0, 0
        if self.padding == "same":
            (kh, kw), (dh, dw) = pair(self.kernel_size), pair(self.dilation)
            th, tw = dh * (kh - 1), dw * (kw - 1)
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        if isinstance(self.padding, Sides):
            return self.padding.tuple()
        ph, pw = pair(self.padding)
        return ph, ph, pw, pw

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(f"conv2d expects an image input (C, H, W), got {tuple(in_shape)}; "
                             "set input.shape to [C, H, W]")
        c, h, w = in_shape
        if c % self.groups:
            raise ShapeError(f"{c} input channels do not split into {self.groups} groups; "
                             f"groups must divide the input channels")
        pt, pb, pl, pr = self.pads()
        (kh, kw), (sh, sw) = pair(self.kernel_size), pair(self.stride)
        dh, dw = pair(self.dilation)
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # extent of the dilated kernel
        if h + pt + pb < span_h or w + pl + pr < span_w:
            raise ShapeError(
                f"the {kh}x{kw} kernel (dilation {dh}x{dw}, extent {span_h}x{span_w}) is larger "
                f"than the padded input {h + pt + pb}x{w + pl + pr}; use a smaller kernel_size "
                "or add padding")
        oh = (h + pt + pb - span_h) // sh + 1
        ow = (w + pl + pr - span_w) // sw + 1
        return (self.out_channels, oh, ow)

    def param_shapes(self, in_shape):
        cg = in_shape[0] // self.groups  # input channels per group
        shapes = {"weight": (self.out_channels, cg, *pair(self.kernel_size))}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def macs(self, in_shape, out_shape):
        kh, kw = pair(self.kernel_size)
        cg = in_shape[0] // self.groups
        return out_shape[0] * out_shape[1] * out_shape[2] * cg * kh * kw

    def torch_module(self, info, nn):
        sides = isinstance(self.padding, Sides)
        pt, pb, pl, pr = self.pads()
        padding = self.padding if isinstance(self.padding, str) else (0 if sides else (pt, pl))
        args = (info.in_shape[0], self.out_channels, pair(self.kernel_size))
        kwargs = {"stride": pair(self.stride), "padding": padding, "dilation":
                  pair(self.dilation), "groups": self.groups, "bias": self.bias}
        if not sides:
            return nn.Conv2d(*args, **kwargs)

        class PaddedConv(nn.Conv2d):  # torch pads symmetrically: pad with zeros first
            def forward(self, x):
                return super().forward(nn.functional.pad(x, (pl, pr, pt, pb)))

        return PaddedConv(*args, **kwargs)

    def geometry(self, in_shape) -> Geometry:
        """The shapes the conv algorithms need (netspec/kernels/conv.py)."""
        o, oh, ow = self.output_shape(in_shape)
        return Geometry(*in_shape, o, oh, ow, pair(self.kernel_size), pair(self.stride),
                        pair(self.dilation), self.pads(), self.groups)

    def build(self, ctx):
        """Training runs the algorithm `choose` picks from the plan's options (recorded in
        ctx.algorithm); inference runs im2col's cache-blocked path, or Winograd where the plan
        option eval_conv and the batch say it pays (`eval_winograd`). A backward follows the
        algorithm of the last forward. The forward takes an optional eval-mode epilogue,
        forward(x, False, after) (netspec/kernels/conv.py)."""
        g = self.geometry(ctx.in_shape)
        ctx.algorithm = choose(g, ctx.conv, ctx.blas_threads)
        if ctx.algorithm in ("grouped", "depthwise"):  # the same algorithm in both modes
            cls = Grouped if ctx.algorithm == "grouped" else Depthwise
            algo = cls(g, ctx.params, ctx.grads, ctx.ws)
            return algo.forward, algo.backward
        infer = Im2col(g, ctx.params, ctx.grads, ctx.ws)
        train = infer if ctx.algorithm == "im2col" else ALGORITHMS[ctx.algorithm](
            g, ctx.params, ctx.grads, ctx.ws)
        wino = None  # inference's Winograd (plan option eval_conv), where the batch pays
        if eval_winograd(g, ctx.eval_conv, ctx.blas_threads):
            wino = train if isinstance(train, WinogradF4) else WinogradF4(
                g, ctx.params, ctx.grads, ctx.ws)
        last = [infer]

        def forward(x, training, after=None):
            last[0] = train if training else (
                wino if wino is not None and winograd.pays_at_inference(
                    g.c, g.o, g.w, x.shape[-1]) else infer)
            return last[0].forward(x, training, after)

        def backward(dy, need_dx=True):
            return last[0].backward(dy, need_dx)

        return forward, backward

    def to_onnx(self, g, x):
        """Conv with explicit pads [top, left, bottom, right] ('same' included: an odd extra
        pixel goes to the bottom/right, as in pads())."""
        pt, pb, pl, pr = self.pads()
        ws = [g.param("weight")] + ([g.param("bias")] if self.bias else [])
        return g.node("Conv", [x, *ws], kernel_shape=list(pair(self.kernel_size)),
                      strides=list(pair(self.stride)), dilations=list(pair(self.dilation)),
                      pads=[pt, pl, pb, pr], group=self.groups)

