"""The Layer base class, the registry decorator and the conventions every layer file follows.

A layer is one frozen pydantic model: its fields are the spec's hyperparameters, and its methods
are the pure shape rule (`output_shape`, `param_shapes`, `macs`) and `build`, which returns the
forward and backward closures side by side. Parameters never live on the model; they live in
the plan's dict and reach the closures through `Ctx`.

Plan-wide conventions (settled once, relied on by every layer file):

* Internal layout is batch-innermost: a conv activation is (C, H, W, N) and a flat one is (D, N).
  Shifted-window copies (im2col, pooling) then move contiguous runs, and flattening
  (C, H, W, N) -> (C*H*W, N) is free and keeps PyTorch's feature order. `Plan.forward` converts
  from and to PyTorch's (N, C, H, W) / (N, D) at the boundary. Per-sample shapes in specs and
  shape rules never include N.
* Parameters use PyTorch names and layouts: `weight` (out, in, kh, kw) or (out, in), `bias` (out,).
* `forward(x, train)` never modifies `x` (the layer before may still need it) and returns an
  array owned by the layer, valid until that layer's next forward.
* `backward(dy, need_dx)` overwrites (does not accumulate) the layer's parameter gradients in
  `ctx.grads` and returns dx, an array owned by the layer (or None when `need_dx` is False,
  which the trainer passes to the first layer). It may overwrite `dy`, which is dead afterwards.
* Graphs: a layer reads the outputs named in `inputs` (default: the layer above). A layer with
  `multi_input = True` (add, concat) reads two or more: its shape methods get a tuple of input
  shapes, `forward(xs, train)` a list of arrays, and `backward(dy, need)` (need: one bool per
  input) returns a list of dx, none of which may be the same array as another (each reader may
  overwrite its dy). The plan sums the gradients of an output read by several layers.
* The PyTorch twin: `torch_module(info, nn)` returns the torch.nn module computing the same
  function, with the same parameter and buffer names; multi-input twins take the inputs as
  separate arguments. torch is never imported by a layer file at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator

from netspec.nn.init import InitSpec, KaimingNormal, Zeros, fans_of

Shape = tuple  # per-sample shape, e.g. (C, H, W) or (D,)
Forward = Callable[[np.ndarray, bool], np.ndarray]
Backward = Callable[[np.ndarray, bool], "np.ndarray | None"]

LAYERS: dict[str, type[Layer]] = {}  # type tag -> class, filled by @register

DEFAULT_INIT = InitSpec(weight=KaimingNormal(), bias=Zeros())


class ShapeError(ValueError):
    """A layer cannot accept its input shape; the message says why and how to fix it."""


class NamedShape(tuple):
    """A per-sample shape that also knows the name of the output it describes, as written in
    the spec ('bn2', 'in'); shape inference gives these to multi-input layers for messages."""

    def __new__(cls, shape, name: str):
        obj = super().__new__(cls, shape)
        obj.name = name
        return obj


def named(shape) -> str:
    """"'bn2' (16, 28, 28)" for a NamedShape, else "(16, 28, 28)"."""
    name = getattr(shape, "name", None)
    return f"'{name}' {tuple(shape)}" if name else str(tuple(shape))


def register(cls):
    """Class decorator: add a layer to the registry under its `type` literal."""
    tag = cls.model_fields["type"].default
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__name__} needs a field `type: Literal['...'] = '...'`")
    if tag in LAYERS:
        raise TypeError(f"layer type '{tag}' is registered twice "
                        f"({LAYERS[tag].__name__} and {cls.__name__})")
    LAYERS[tag] = cls
    return cls


class Workspace:
    """Preallocated scratch arrays, reused across steps while their shape stays the same."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self._arrays: dict[str, np.ndarray] = {}

    def __call__(self, key: str, shape, zero: bool = False, dtype=None,
                 fill: float | None = None) -> np.ndarray:
        """The array stored under `key`, reallocated when `shape` changes.

        With zero=True (or fill=value) a new array starts zeroed (filled), e.g. a padded buffer
        whose border is never written, or a vector of ones for row sums; an existing one is
        returned as it is.
        """
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        arr = self._arrays.get(key)
        if arr is None or arr.shape != tuple(shape) or arr.dtype != dtype:
            arr = np.empty(shape, dtype)
            fill = 0 if zero else fill
            if fill is not None:
                arr.fill(fill)
            self._arrays[key] = arr
        return arr


@dataclass
class Ctx:
    """What `build` gets: the layer's own arrays (local names) and the plan's tools."""

    in_shape: Shape
    params: dict = field(default_factory=dict)  # "weight" -> array, views into plan.params
    grads: dict = field(default_factory=dict)  # same keys as params
    buffers: dict = field(default_factory=dict)  # non-trainable state, e.g. running_mean
    ws: Workspace = None
    noise: object = None  # LayerNoise (netspec/kernels/noise.py): keyed draws for dropout
    # Piecewise-linear layers (relu, maxpool) store here which piece the last forward used
    # (a sign mask, an argmax); the gradient checker skips steps that change it (kinks).
    region: np.ndarray | None = None
    # Set during a worker pool's steps only (netspec/train/exchange.py's BatchExchange): a
    # batch-coupled layer (batchnorm) gathers its per-channel partial sums from every worker.
    exchange: object = None
    # The plan's options that algorithms choose by (netspec/plan/options.py): the conv request
    # ('auto' or an algorithm) and the BLAS threads of each process; a layer that chooses an
    # algorithm records its name in `algorithm`, which `netspec train` and `netspec bench` show.
    conv: str = "auto"
    eval_conv: str = "im2col"  # 'im2col' or 'auto' (inference may take Winograd)
    blas_threads: int = 1
    algorithm: str | None = None

    @property
    def dtype(self):
        return self.ws.dtype


# Characters in a layer's full name (layer1.0.conv1): it names checkpoint entries, ONNX nodes and
# diagram boxes, and a zip entry name (an .npz key) is at most 65,535 bytes.
MAX_NAME = 200


class Layer(BaseModel):
    """Base of every layer schema. Subclasses add `type: Literal[...]` and hyperparameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$", max_length=MAX_NAME,
        description="Parameter prefix (conv1 -> conv1.weight); defaults to <type><index>. "
                    "Inside a block it nests under the block's name (layer1.0.conv1).",
    )
    inputs: list[str] | None = Field(
        None, min_length=1, exclude_if=lambda v: v is None,
        description="Names of earlier layers or blocks this layer reads, or `input` for the "
                    "network's input (`in` for a block's input); default: the layer above.",
    )

    # (spec fields, input shape) pairs: the test suite shape- and gradient-checks each one.
    examples: ClassVar[list[tuple[dict, Shape]]] = []
    # True when one sample's output depends on the other samples of its batch (batchnorm's
    # batch statistics): split across worker processes (netspec/train/pool.py), such a layer
    # combines the workers' partial sums through ctx.exchange, and a batch of one sample is
    # refused.
    couples_batch: ClassVar[bool] = False
    # True for layers that read two or more inputs (add, concat); see the module docstring.
    multi_input: ClassVar[bool] = False

    def output_shape(self, in_shape: Shape) -> Shape:
        """Per-sample output shape; raise ShapeError if `in_shape` is impossible."""
        return in_shape

    def written_out(self) -> dict:
        """Fields left null in the spec, with the values they stand for (JSON-ready), for the
        resolved spec that writes every default out (NetSpec.resolved)."""
        return {}

    def param_shapes(self, in_shape: Shape) -> dict[str, Shape]:
        """Trainable tensors by local name, in PyTorch layout."""
        return {}

    def buffer_shapes(self, in_shape: Shape) -> dict[str, Shape]:
        """Non-trainable state tensors (saved in checkpoints, not optimised)."""
        return {}

    def macs(self, in_shape: Shape, out_shape: Shape) -> int:
        """Multiply-accumulates per sample in the forward pass."""
        return 0

    def init_params(self, in_shape: Shape, rng: np.random.Generator,
                    defaults: InitSpec | None) -> dict[str, np.ndarray]:
        """float64 initial values: the layer's `init`, else `defaults.init`, else built-ins."""
        shapes = self.param_shapes(in_shape)
        if not shapes:
            return {}
        fans = fans_of(shapes["weight"]) if len(shapes.get("weight", ())) >= 2 else (1, 1)
        own = getattr(self, "init", None)
        out = {}
        for key, shape in shapes.items():
            scheme = ((own and getattr(own, key, None))
                      or (defaults and getattr(defaults, key, None))
                      or getattr(DEFAULT_INIT, key))
            out[key] = scheme.sample(shape, fans, rng)
        return out

    def init_buffers(self, in_shape: Shape) -> dict[str, np.ndarray]:
        return {k: np.zeros(s) for k, s in self.buffer_shapes(in_shape).items()}

    def build(self, ctx: Ctx) -> tuple[Forward, Backward]:
        raise NotImplementedError

    def torch_module(self, info, nn):
        """The torch.nn twin for this layer (`info`: its LayerInfo; `nn`: torch.nn)."""
        raise NotImplementedError(f"layer type '{self.type}' has no PyTorch twin; add a "
                                  f"torch_module method to its file in netspec/nn/layers/")


def pair(v) -> tuple[int, int]:
    """3 -> (3, 3); [3, 2] -> (3, 2)."""
    return (v, v) if isinstance(v, int) else tuple(v)


def _int_pair(minimum: int, words: tuple[str, ...] = ()):
    """A validator for `3`, `[3, 2]` (and optionally keywords such as 'same')."""
    allowed = f"an int >= {minimum} or a pair [h, w]" + "".join(f", '{w}'" for w in words)

    def check(v):
        if isinstance(v, str) and v in words:
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            v = (v, v)
        if (isinstance(v, (list, tuple)) and len(v) == 2
                and all(isinstance(i, int) and not isinstance(i, bool) for i in v)):
            if min(v) < minimum:
                raise ValueError(f"must be {allowed}, got {list(v)}")
            return tuple(v)
        raise ValueError(f"expected {allowed}; got {v!r}")

    number = Annotated[int, Field(ge=minimum)]
    schema_type = number | Annotated[list[number], Field(min_length=2, max_length=2)]
    if words:
        schema_type = schema_type | Literal[words]
    return PlainValidator(check, json_schema_input_type=schema_type)


# Field types for kernel sizes, strides and paddings: an int or a pair (h, w).
_as_written = PlainSerializer(lambda v: list(v) if isinstance(v, tuple) else v)  # (3, 3) -> [3, 3]
IntPair = Annotated[tuple[int, int], _int_pair(1), _as_written]
NonNegPair = Annotated[tuple[int, int], _int_pair(0), _as_written]
ConvPadding = Annotated[tuple[int, int] | str, _int_pair(0, ("same", "valid")), _as_written]
