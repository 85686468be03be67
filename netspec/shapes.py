"""Shape inference: per-layer shapes, parameter counts and costs, computed without arrays.

`infer(spec)` walks the layers once, asking each for its output shape (Caffe's Reshape), its
parameter shapes and its multiply-accumulates. An impossible network raises SpecError naming the
layer, its line, the shapes involved and, where obvious, the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from netspec.errors import SpecError
from netspec.layers import Layer, ShapeError


@dataclass(frozen=True)
class LayerInfo:
    """What shape inference knows about one layer; shapes are per sample (no batch axis)."""

    index: int
    name: str  # parameter prefix: conv1 -> conv1.weight
    layer: Layer
    in_shape: tuple
    out_shape: tuple
    param_shapes: dict  # local name ("weight") -> shape
    buffer_shapes: dict  # non-trainable state ("running_mean") -> shape
    macs: int  # multiply-accumulates per sample, forward pass

    @property
    def type(self) -> str:
        return self.layer.type

    @property
    def params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes.values())


def fmt(shape) -> str:
    """(16, 5, 5) -> '(16, 5, 5)'; (10,) -> '(10,)'."""
    return str(tuple(shape))


def infer(spec) -> list[LayerInfo]:
    """LayerInfo for every layer of a validated NetSpec; raises SpecError if impossible."""
    src = spec.source
    problems = []
    names = spec.layer_names()
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            where = ("layers", i, "name") if spec.layers[i].name else ("layers", i)
            problems.append(src.problem(where, f"layer name '{name}' is already used by "
                                               f"layers[{seen[name]}]; names must be unique"))
        seen.setdefault(name, i)

    expected = _dataset_shape(spec)
    shape = tuple(spec.input.shape)
    if expected and math.prod(shape) != math.prod(expected):
        problems.append(src.problem(("input", "shape"), (
            f"{spec.data.dataset} samples have shape {list(expected)}, so input.shape must be "
            f"{list(expected)} or [{math.prod(expected)}]; got {list(shape)}")))
    elif expected and len(shape) == 3 and shape != tuple(expected):
        problems.append(src.problem(("input", "shape"), (
            f"{spec.data.dataset} samples have shape {list(expected)}, so input.shape must be "
            f"{list(expected)} or [{math.prod(expected)}]; got {list(shape)}"
            + (f"; {channels_last_hint(shape)}" if channels_last_hint(shape) else ""))))

    infos = []
    for i, layer in enumerate(spec.layers):
        try:
            out = tuple(layer.output_shape(shape))
        except ShapeError as e:
            hint = channels_last_hint(tuple(spec.input.shape))
            if hint and not any(p.path == "input.shape" for p in problems):
                problems.append(src.problem(("input", "shape"), hint))  # the likely culprit
            problems.append(src.problem(("layers", i), f"input shape {fmt(shape)}: {e}"))
            break
        info = LayerInfo(i, names[i], layer, shape, out, layer.param_shapes(shape),
                         layer.buffer_shapes(shape), layer.macs(shape, out))
        too_big = _too_big(info)
        if too_big:
            problems.append(src.problem(("layers", i), too_big))
            break
        infos.append(info)
        shape = out
    else:
        classes = spec.data.classes
        if classes and shape != (classes,):
            problems.append(_class_mismatch(spec, shape, classes))
    if problems:
        raise SpecError(problems)
    return infos


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


def _dataset_shape(spec):
    from netspec.spec import KNOWN_DATASETS

    return KNOWN_DATASETS.get(spec.data.dataset, (None, None))[0]


def _class_mismatch(spec, shape, classes):
    last = len(spec.layers) - 1
    what = f"{spec.data.dataset} has {classes} classes"
    layer = spec.layers[last]
    if len(shape) != 1:
        return spec.source.problem(("layers", last), (
            f"the network ends with shape {fmt(shape)}, but {spec.loss.type} needs one score "
            f"per class ({what}); end with {{type: flatten}} and "
            f"{{type: linear, out_features: {classes}}}"))
    if hasattr(layer, "out_features"):
        return spec.source.problem(("layers", last, "out_features"), (
            f"the last layer gives {shape[0]} outputs but {what}; set out_features: {classes}"))
    return spec.source.problem(("layers", last), (
        f"the network ends with {shape[0]} outputs but {what}; "
        f"add {{type: linear, out_features: {classes}}}"))
