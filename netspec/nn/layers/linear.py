"""linear: affine map y = W x + b, as torch.nn.Linear. (D, N) -> (out_features, N)."""

from typing import ClassVar, Literal

import numpy as np
from pydantic import PositiveInt

from netspec.nn.init import InitSpec
from netspec.nn.layers.base import Layer, ShapeError, register


@register
class Linear(Layer):
    """Fully connected layer; weight (out_features, in_features), bias (out_features,)."""

    type: Literal["linear"] = "linear"
    out_features: PositiveInt
    bias: bool = True
    init: InitSpec | None = None

    examples: ClassVar[list] = [({"out_features": 3}, (5,)),
                                ({"out_features": 2, "bias": False}, (4,))]

    def output_shape(self, in_shape):
        if len(in_shape) != 1:
            raise ShapeError(f"linear expects a flat input (D,), got {tuple(in_shape)}; "
                             "add {type: flatten} before it")
        return (self.out_features,)

    def param_shapes(self, in_shape):
        shapes = {"weight": (self.out_features, in_shape[0])}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def macs(self, in_shape, out_shape):
        return in_shape[0] * self.out_features

    def torch_module(self, info, nn):
        return nn.Linear(info.in_shape[0], self.out_features, bias=self.bias)

    def build(self, ctx):
        W, gW = ctx.params["weight"], ctx.grads["weight"]
        b, gb = ctx.params.get("bias"), ctx.grads.get("bias")
        cache = {}

        def forward(x, train):
            n = x.shape[-1]
            cache["x"] = x
            y = ctx.ws("y", (self.out_features, n))
            np.matmul(W, x, out=y)  # (out, in) @ (in, N) -> (out, N)
            if b is not None:
                y += b[:, None]
            return y

        def backward(dy, need_dx=True):
            x = cache["x"]
            np.matmul(dy, x.T, out=gW)  # dL/dW = dy x^T: (out, N) @ (N, in) -> (out, in)
            if gb is not None:
                np.sum(dy, axis=1, out=gb)  # dL/db = sum over the batch
            if not need_dx:
                return None
            dx = ctx.ws("dx", x.shape)
            return np.matmul(W.T, dy, out=dx)  # dL/dx = W^T dy: (in, out) @ (out, N) -> (in, N)

        return forward, backward

    def to_onnx(self, g, x):
        """Gemm: x (N, in) @ weight^T (transB=1, weight stays (out, in)) + bias."""
        ws = [g.param("weight")] + ([g.param("bias")] if self.bias else [])
        return g.node("Gemm", [x, *ws], transB=1)
