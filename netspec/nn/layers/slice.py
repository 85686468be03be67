"""slice: a range of channels (C, H, W) or features (D,), as x[:, start:stop] in torch.
(C, H, W) -> (stop - start, H, W).

torch.chunk and torch.split along channels (ShuffleNetV2, CSP nets) are one slice layer per
part, each reading the same input:
    - {type: slice, name: left, start: 0, stop: 58}
    - {type: slice, name: right, start: 58, stop: 116, inputs: [in]}
ONNX's Split (k outputs) imports as k slice layers, and Slice on axis 1 as one.
    y = x[start:stop];   dL/dx = dy in rows start..stop, 0 elsewhere
MACs: 0 (a view in forward; backward zero-fills the rows outside the range).
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from netspec.nn.layers.base import Layer, ShapeError, register


@register
class Slice(Layer):
    type: Literal["slice"] = "slice"
    start: NonNegativeInt = Field(0, description="First channel (feature) kept.")
    stop: PositiveInt = Field(description="One past the last channel (feature) kept.")

    examples: ClassVar[list] = [({"start": 1, "stop": 3}, (4, 2, 2)), ({"stop": 2}, (5,))]

    @model_validator(mode="after")
    def _ordered(self):
        if self.start >= self.stop:
            raise ValueError(f"start ({self.start}) must be below stop ({self.stop})")
        return self

    def output_shape(self, in_shape):
        if len(in_shape) not in (1, 3):
            raise ShapeError(f"slice takes channels of (C, H, W) or features of (D,), got "
                             f"{tuple(in_shape)}")
        if self.stop > in_shape[0]:
            raise ShapeError(f"stop {self.stop} is past the input's {in_shape[0]} "
                             f"{'channels' if len(in_shape) == 3 else 'features'}")
        return (self.stop - self.start, *in_shape[1:])

    def torch_module(self, info, nn):
        start, stop = self.start, self.stop

        class Slice(nn.Module):
            def forward(self, x):
                return x[:, start:stop]

        return Slice()

    def build(self, ctx):
        a, b = self.start, self.stop

        def forward(x, train):
            return x[a:b]  # a view of contiguous leading rows

        def backward(dy, need_dx=True):
            if not need_dx:
                return None
            dx = ctx.ws("dx", (ctx.in_shape[0], *dy.shape[1:]))
            dx[:a] = 0
            dx[b:] = 0
            dx[a:b] = dy
            return dx

        return forward, backward

    def to_onnx(self, g, x):
        """Slice(x, starts, ends, axes=[1]) (inputs since opset 10)."""
        starts, ends, axes = ([v] for v in (self.start, self.stop, 1))
        ints = [g.constant(v, np.int64) for v in (starts, ends, axes)]
        return g.node("Slice", [x, *ints])
