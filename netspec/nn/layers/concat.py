"""concat: joins two or more inputs along channels, (C_i, H, W) -> (sum C_i, H, W), or along
features, (D_i,) -> (sum D_i,); every other dimension must match. As torch.cat(dim=1).

    y[o_i : o_i + C_i] = x_i   (o_i: the channels of the inputs before x_i)
    dL/dx_i = dy[o_i : o_i + C_i]

Backward returns views of dy: disjoint slices, so each reader may overwrite its own.
"""

from typing import ClassVar, Literal

from netspec.nn.layers.base import Layer, ShapeError, named, register

_AXES = {3: ("channels", "height", "width"), 1: ("features",)}


@register
class Concat(Layer):
    """Stacks its inputs along the first (channel or feature) axis."""

    type: Literal["concat"] = "concat"

    multi_input: ClassVar[bool] = True
    examples: ClassVar[list] = [({"inputs": ["input", "input"]}, (2, 3, 3)),
                                ({"inputs": ["input", "input", "input"]}, (4,))]

    def output_shape(self, in_shape):
        first, *rest = in_shape  # one shape per input
        if len(first) not in _AXES:
            raise ShapeError(f"concat joins (C, H, W) images or (D,) vectors; got {named(first)}")
        for other in rest:
            if len(other) != len(first):
                raise ShapeError(f"inputs differ in rank: {named(first)} vs {named(other)}; "
                                 "concat joins images with images, vectors with vectors "
                                 "(flatten the images first)")
            for axis in range(1, len(first)):
                if other[axis] != first[axis]:
                    what = _AXES[len(first)][axis]
                    raise ShapeError(
                        f"inputs differ in {what} (dimension {axis}): {named(first)} vs "
                        f"{named(other)}; concat joins along {_AXES[len(first)][0]}, so every "
                        "other dimension must match")
        return (sum(s[0] for s in in_shape), *first[1:])

    def torch_module(self, info, nn):
        import torch

        class Concat(nn.Module):
            def forward(self, *xs):
                return torch.cat(xs, dim=1)

        return Concat()

    def build(self, ctx):
        sizes = [s[0] for s in ctx.in_shape]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]

        def forward(xs, train):
            y = ctx.ws("y", (sum(sizes), *xs[0].shape[1:]))  # (C, H, W, N) or (D, N)
            for x, o, c in zip(xs, starts, sizes):
                y[o:o + c] = x
            return y

        def backward(dy, need):
            return [dy[o:o + c] if n else None for o, c, n in zip(starts, sizes, need)]

        return forward, backward

    def to_onnx(self, g, *xs):
        """Concat along axis 1: the channels of (N, C, H, W) or the features of (N, D)."""
        return g.node("Concat", list(xs), axis=1)
