"""add: the elementwise sum of two or more inputs of identical shape (no broadcasting).

    y = x_1 + x_2 + ... + x_k;   dL/dx_i = dy for every i

A residual connection is `{type: add, inputs: [bn2, in]}`. Backward hands `dy` itself to the
first input and a copy to each other one, since every reader may overwrite its dy.
"""

from typing import ClassVar, Literal

import numpy as np

from netspec.nn.layers.base import Layer, ShapeError, named, register


@register
class Add(Layer):
    """Sums its inputs; all must have the same shape."""

    type: Literal["add"] = "add"

    multi_input: ClassVar[bool] = True
    examples: ClassVar[list] = [({"inputs": ["input", "input"]}, (3, 4, 4)),
                                ({"inputs": ["input", "input", "input"]}, (5,))]

    def output_shape(self, in_shape):
        first, *rest = in_shape  # one shape per input
        for other in rest:
            if tuple(other) != tuple(first):
                raise ShapeError(f"inputs differ: {named(first)} vs {named(other)}; add "
                                 "needs inputs of identical shape (it does not broadcast)")
        return tuple(first)

    def torch_module(self, info, nn):
        class Add(nn.Module):
            def forward(self, *xs):
                out = xs[0]
                for x in xs[1:]:
                    out = out + x
                return out

        return Add()

    def build(self, ctx):
        k = len(ctx.in_shape)

        def forward(xs, train):
            y = ctx.ws("y", xs[0].shape)
            np.add(xs[0], xs[1], out=y)
            for x in xs[2:]:
                y += x
            return y

        def backward(dy, need):
            out, given = [], False
            for i in range(k):
                if not need[i]:
                    out.append(None)
                elif not given:  # dy is ours to hand on once
                    out.append(dy)
                    given = True
                else:
                    dx = ctx.ws(f"dx{i}", dy.shape)
                    np.copyto(dx, dy)
                    out.append(dx)
            return out

        return forward, backward

    def to_onnx(self, g, *xs):
        """Add for two inputs; Sum for more (ONNX's Add takes exactly two)."""
        return g.node("Add" if len(xs) == 2 else "Sum", list(xs))
