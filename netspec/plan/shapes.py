"""Shape inference: per-layer shapes, inputs, parameter counts and costs, computed without arrays.

`infer(in_shape, layers)` is a pure function of the network's per-sample input shape and its
(expanded) layer list. It walks the layers once, in list order, keeping a name -> shape map:
each layer reads the outputs named in its `inputs` (default: the layer above; `input` is the
network's input), and is asked for its output shape (Caffe's Reshape), its parameter shapes
and its multiply-accumulates. The result, one `LayerInfo` per layer, is the graph IR that the
plan, the torch bridge, ONNX export and drawings read:

    info.name     "layer1.0.conv1"   (parameter prefix: layer1.0.conv1.weight)
    info.inputs   ("stem_relu",)     (producers, in order: earlier layer names or "input")
    info.in_shape (16, 28, 28)       (for a multi-input layer: one shape per input)

An impossible network raises `GraphError`, whose problems name the layer by index and the key
inside it; spec/model.py turns them into file:line:col messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from netspec.errors import did_you_mean
from netspec.nn.layers import Layer, ShapeError
from netspec.nn.layers.base import NamedShape

INPUT = "input"  # the name under which layers read the network's input


@dataclass(frozen=True)
class LayerInfo:
    """What shape inference knows about one layer; shapes are per sample (no batch axis)."""

    index: int
    name: str  # parameter prefix: conv1 -> conv1.weight
    layer: Layer
    in_shape: tuple  # the input's shape; for a multi-input layer a tuple of them
    out_shape: tuple
    param_shapes: dict  # local name ("weight") -> shape
    buffer_shapes: dict  # non-trainable state ("running_mean") -> shape
    macs: int  # multiply-accumulates per sample, forward pass
    inputs: tuple = (INPUT,)  # names of the producers this layer reads, in order

    @property
    def type(self) -> str:
        return self.layer.type

    @property
    def params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes.values())

    @property
    def in_shapes(self) -> tuple:
        """One shape per input, for any layer."""
        return tuple(self.in_shape) if self.layer.multi_input else (self.in_shape,)


@dataclass(frozen=True)
class GraphProblem:
    """One reason the network is impossible: layer `index` (None: the input), `key` inside it."""

    index: int | None
    key: tuple
    message: str


class GraphError(ValueError):
    def __init__(self, problems: list[GraphProblem]):
        self.problems = problems
        super().__init__("\n".join(f"layers[{p.index}]: {p.message}" for p in problems))


def fmt(shape) -> str:
    """(16, 5, 5) -> '(16, 5, 5)'; (10,) -> '(10,)'."""
    return str(tuple(shape))


def layer_names(layers) -> list[str]:
    """Each layer's name, or <type><index> when it has none."""
    return [layer.name or f"{layer.type}{i}" for i, layer in enumerate(layers)]


def infer(in_shape, layers, labels=None) -> list[LayerInfo]:
    """LayerInfo for every layer; raises GraphError if the network is impossible.

    `labels` (optional) gives each layer's (name, input names) as the user wrote them, e.g.
    ("sum1", ("bn2", "in")) inside a block; messages use them instead of the full names.
    """
    names = layer_names(layers)
    problems: list[GraphProblem] = []
    index: dict[str, int] = {}
    for i, (name, layer) in enumerate(zip(names, layers)):
        key = ("name",) if layer.name else ()
        if name in (INPUT, "in"):
            problems.append(GraphProblem(i, key, f"'{name}' names the input of the network or "
                                                 "of a block; give the layer another name"))
        elif name in index:
            problems.append(GraphProblem(i, key, f"layer name '{name}' is already used by "
                                                 f"layers[{index[name]}]; names must be unique"))
        index.setdefault(name, i)
    groups = set()
    for i, name in enumerate(names):  # torch nests layer1.0.conv1 in a module layer1
        parts = name.split(".")
        for n in range(1, len(parts)):
            prefix = ".".join(parts[:n])
            if prefix in index and prefix not in groups:
                groups.add(prefix)
                problems.append(GraphProblem(index[prefix], ("name",), (
                    f"'{prefix}' names a layer and also the group of '{name}'; give the layer "
                    "another name")))

    wiring = [_inputs(i, layer, names, index, problems) for i, layer in enumerate(layers)]
    readers = {n for i, layer in enumerate(layers)
               for n in (layer.inputs or ([names[i - 1]] if i else []))}
    for i, name in enumerate(names[:-1]):
        if name not in readers:  # as written: every copy of a block says it once
            written = labels[i][0] if labels else name
            problems.append(GraphProblem(i, (), (
                f"the output of '{written}' is never used: no later layer reads it; name it in "
                "a later layer's inputs, or remove the layer")))

    shapes: dict[str, tuple | None] = {INPUT: tuple(in_shape)}
    infos = []
    for i, (name, layer, ins) in enumerate(zip(names, layers, wiring)):
        shapes[name] = None  # unknown until it is inferred
        if ins is None or any(shapes.get(n) is None for n in ins):
            continue  # a problem was reported above, or an input's shape is unknown
        label, in_labels = labels[i] if labels else (name, ins)
        try:
            if layer.multi_input:
                shape = tuple(NamedShape(shapes[n], lab) for n, lab in zip(ins, in_labels))
                out = tuple(layer.output_shape(shape))
                shape = tuple(tuple(s) for s in shape)
            else:
                shape = shapes[ins[0]]
                out = tuple(layer.output_shape(shape))
        except ShapeError as e:
            message = (f"{layer.type} '{label}': {e}" if layer.multi_input
                       else f"input shape {fmt(shapes[ins[0]])}: {e}")
            problems.append(GraphProblem(i, (), message))
            continue
        info = LayerInfo(i, name, layer, shape, out, layer.param_shapes(shape),
                         layer.buffer_shapes(shape), layer.macs(shape, out), ins)
        too_big = _too_big(info)
        if too_big:
            problems.append(GraphProblem(i, (), too_big))
            continue
        infos.append(info)
        shapes[name] = out
    if problems:
        raise GraphError(problems)
    return infos


def _inputs(i, layer, names, index, problems) -> tuple[str, ...] | None:
    """The producers layer i reads (None after a problem): its `inputs`, else the layer above."""
    if layer.inputs is None:
        ins = (names[i - 1] if i else INPUT,)
    else:
        ins = tuple(layer.inputs)
        for k, n in enumerate(ins):
            if n == INPUT or index.get(n, i) < i:
                continue
            if n in index:
                problems.append(GraphProblem(i, ("inputs", k), (
                    f"'{n}' is defined further down (layers[{index[n]}]); a layer reads only "
                    "layers above it")))
            else:
                problems.append(GraphProblem(i, ("inputs", k), (
                    f"unknown input '{n}'{did_you_mean(n, [INPUT, *names[:i]])}; inputs name "
                    "earlier layers or 'input'")))
            ins = None
        if ins is None:
            return None
    if layer.multi_input and len(ins) < 2:
        problems.append(GraphProblem(i, ("inputs",) if layer.inputs else (), (
            f"{layer.type} needs two or more inputs, e.g. inputs: [conv2, shortcut]; "
            f"got {list(ins)}")))
        return None
    if not layer.multi_input and len(ins) != 1:
        problems.append(GraphProblem(i, ("inputs",), (
            f"{layer.type} reads one input, got {len(ins)}; join them first with "
            "{type: add} or {type: concat}")))
        return None
    return ins


def channels_last_hint(shape: tuple) -> str:
    """'input.shape is [C, H, W] ...: did you mean [1, 28, 28]?' when `shape` looks like
    [H, W, C] (a few channels last, a large first axis), else ''."""
    if len(shape) == 3 and shape[2] in (1, 3, 4) and shape[0] > 4 and shape[1] > 4:
        h, w, c = shape
        return (f"input.shape is [C, H, W] (channels first, as PyTorch), and {list(shape)} "
                f"looks like [H, W, C]: did you mean [{c}, {h}, {w}]?")
    return ""


MAX_ELEMENTS = 2**31  # per tensor: 8 GiB of float32, beyond any network netspec can train


def _too_big(info: LayerInfo) -> str | None:
    """A message when a layer's parameters or per-sample output could never be allocated."""
    for what, shape in [("output", info.out_shape), *info.param_shapes.items()]:
        n = math.prod(shape)
        if n > MAX_ELEMENTS:
            return (f"its {what} tensor {fmt(shape)} would hold {n:,} values "
                    f"({4 * n / 2**30:,.0f} GiB as float32); use smaller sizes")
    return None
