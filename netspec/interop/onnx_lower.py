"""Lowering an analysed ONNX graph to netspec layers, by recognising patterns.

    low = Lowering(analysis)      # the state the handlers work on (onnx_import.lower runs them)

Each data-path node is visited in order; a handler for its op type emits a layer (`Emitted`:
the spec fields, the ONNX values it reads and writes, its parameters) and may take the nodes
around it into the same layer:
  * Conv, Gemm, MatMul (+ Add), BatchNormalization absorb a following per-channel Mul / Add /
    Sub / Div by constants into their weights and biases (Caffe2's BN + Mul + Add is a
    batchnorm with an affine; a bias added after a Conv is its bias);
  * a Pad of zeros before a Conv or AveragePool (of -inf, or of zeros after a relu, before a
    MaxPool) becomes the layer's padding;
  * Reshape, Transpose (0, 2, 1, 3, 4), Reshape is a channel shuffle; Reshape or Flatten to
    (N, D) is flatten; a Reshape that changes nothing, Identity, and Cast between floats are
    left out;
  * GlobalAveragePool followed by Flatten is global_avgpool;
  * Split and Slice along channels are slice layers; Sum is add; Clip(0, 6) is relu6;
  * activations written out as formulas (gelu's erf and tanh forms, silu's x * sigmoid(x),
    softplus with beta and threshold) are recognised in onnx_activations.py.
Anything else is a problem naming the node and the nearest thing netspec has; the importer
reports every one of them at once.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import numpy as np

from netspec.errors import Problem
from netspec.interop.onnx_eval import attrs_of, reshape_target, slice_bounds
from netspec.interop.onnx_fold import Analysis
from netspec.interop.onnx_read import import_onnx


@dataclass
class Emitted:
    """One netspec layer: spec fields (type and hyperparameters), the ONNX values it reads and
    writes, a name hint from the model, and its parameters and buffers (float32)."""

    fields: dict
    inputs: list
    output: str
    hint: str = ""
    params: dict = field(default_factory=dict)


@dataclass
class Lowered:
    layers: list
    alias: dict  # ONNX value -> the value it equals (left-out nodes)
    problems: list


class Lowering:
    def __init__(self, a: Analysis):
        self.onnx = import_onnx()
        self.a = a
        self.opset = a.graph.opset
        self.alias: dict[str, str] = {}
        self.layers: list[Emitted] = []
        self.problems: list[Problem] = []
        self.done: set[int] = set()
        self.readers: dict[str, list] = {}
        for node in a.nodes:
            for name in node.input:
                if name in a.shapes:
                    self.readers.setdefault(name, []).append(node)
        self.producer = {o: n for n in a.nodes for o in n.output if o}
        self.outputs = {o.name for o in a.graph.outputs}
        self.const_users: dict[str, int] = {}  # initializer -> data nodes reading it
        for node in a.nodes:
            for name in {a.origin.get(i, i) for i in node.input if i in a.consts}:
                self.const_users[name] = self.const_users.get(name, 0) + 1

    # ------------------------------------------------ helpers for handlers

    def value(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def shape(self, name: str) -> tuple:
        """Per-sample shape of a data value (no batch axis)."""
        return tuple(self.a.shapes[name][1:])

    def const(self, name: str):
        return self.a.consts.get(name) if name else None

    def attrs(self, node) -> dict:
        return attrs_of(self.onnx, node)

    def only_reader(self, name: str):
        """The one node reading `name`, if exactly one does and it is not a graph output."""
        readers = self.readers.get(name, [])
        if len(readers) == 1 and name not in self.outputs and id(readers[0]) not in self.done:
            return readers[0]
        return None

    def data_inputs(self, node) -> list[str]:
        return [n for n in node.input if n and n in self.a.shapes]

    def emit(self, fields: dict, inputs, output: str, nodes, hint: str = "",
             params: dict | None = None) -> Emitted:
        layer = Emitted(fields, [self.value(i) for i in inputs], output, hint,
                        {k: np.asarray(v, np.float32) for k, v in (params or {}).items()})
        self.layers.append(layer)
        for n in nodes:
            self.done.add(id(n))
        return layer

    def skip(self, node, source: str) -> None:
        """Leave `node` out: its output is `source`."""
        self.alias[node.output[0]] = self.value(source)
        self.done.add(id(node))

    def unsupported(self, node, why: str, nearest: str | None = None) -> None:
        hint = nearest if nearest is not None else nearest_layer(node.op_type)
        self.problems.append(self.a.problem(node, f"{why}{'; ' + hint if hint else ''}"))
        self.done.add(id(node))

    def per_channel(self, arr, data_shape) -> np.ndarray | None:
        """arr as a (C,) vector when it broadcasts against (N, *data_shape) varying along the
        channel (feature) axis only, or is a scalar; else None."""
        if arr is None or arr.dtype.kind not in "fiu":
            return None
        c, rank = data_shape[0], len(data_shape) + 1
        if arr.size == 1:
            return np.full(c, float(arr.reshape(-1)[0]))
        shape = (1,) * (rank - arr.ndim) + tuple(arr.shape)
        if len(shape) != rank or shape[1] != c or any(d != 1 for i, d in enumerate(shape)
                                                      if i != 1):
            return None
        return arr.reshape(c).astype(np.float64)

    def absorb_affine(self, layer: Emitted, nodes: list, scale_keys, shift_key: str) -> None:
        """Fold a chain of per-channel Mul / Div / Add / Sub by constants that follows `layer`
        into its parameters: y * s scales `scale_keys` (and the shift), y + t adds to the
        shift. The layer's output becomes the chain's last value."""
        while True:
            node = self.only_reader(layer.output)
            if node is None or node.op_type not in ("Mul", "Div", "Add", "Sub"):
                return
            other = [n for n in node.input if n != layer.output]
            if len(other) != 1 or list(node.input).count(layer.output) != 1:
                return
            vec = self.per_channel(self.const(other[0]), self.shape(layer.output))
            if vec is None or (node.op_type in ("Div", "Sub") and node.input[0] != layer.output):
                return
            if any(r.op_type in ("Softplus", "Greater") for r in self.readers.get(
                    node.output[0], [])):
                return  # softplus's beta (Mul, Softplus, Div): the activation's pattern
            if node.op_type == "Div":
                if np.any(vec == 0):
                    return
                node_scale, node_shift = 1.0 / vec, 0.0
            elif node.op_type == "Mul":
                node_scale, node_shift = vec, 0.0
            else:
                node_scale, node_shift = 1.0, vec if node.op_type == "Add" else -vec
            for key in scale_keys:
                w = layer.params[key]
                s = np.reshape(node_scale, (-1,) + (1,) * (w.ndim - 1)) if np.ndim(
                    node_scale) else node_scale
                layer.params[key] = (w * s).astype(np.float32)
            shift = layer.params.get(shift_key)
            if shift is None:
                shift = np.zeros(self.shape(layer.output)[0], np.float32)
                if layer.fields.get("bias") is False:
                    del layer.fields["bias"]
            layer.params[shift_key] = (shift * node_scale + node_shift).astype(np.float32)
            layer.output = node.output[0]
            nodes.append(node)
            self.done.add(id(node))

    def padding_before(self, node, x: str, value_ok) -> tuple[str, tuple, object]:
        """(input, (t, b, l, r) of a Pad of constant `value_ok(value)` feeding `node` alone,
        that Pad node) or (x, zeros, None)."""
        pad = self.producer.get(x)
        if pad is None or pad.op_type != "Pad" or id(pad) in self.done:
            return x, (0, 0, 0, 0), None
        if self.only_reader(x) is not node:
            return x, (0, 0, 0, 0), None
        spec = self.pad_spec(pad)
        if spec is None or spec[0] != "constant" or not value_ok(pad.input[0], spec[2]):
            return x, (0, 0, 0, 0), None
        return pad.input[0], spec[1], pad

    def pad_spec(self, pad) -> tuple[str, tuple, float] | None:
        """(mode, (t, b, l, r), value) of a 4-D Pad that pads H and W only, else None."""
        at = self.attrs(pad)
        if self.opset < 11:
            pads, value = at.get("pads"), at.get("value", 0.0)
        else:
            pads = self.const(pad.input[1]) if len(pad.input) > 1 else None
            value = self.const(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else 0.0
            if len(pad.input) > 3 and pad.input[3]:
                return None  # the axes input (opset 18)
        if pads is None or value is None:
            return None
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        if len(pads) != 8 or any(p < 0 for p in pads) or pads[0] or pads[1] or pads[4] or pads[5]:
            return None
        mode = at.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        return mode, (pads[2], pads[6], pads[3], pads[7]), float(np.asarray(value).reshape(-1)[0])

    def non_negative(self, name: str) -> bool:
        """True when `name` is the output of a relu-like layer (never below 0)."""
        node = self.producer.get(name)
        return node is not None and node.op_type in ("Relu", "Sigmoid", "Softmax")


# What netspec has nearest to operators it cannot import.
NEAREST = {
    "ConvTranspose": "netspec has no transposed convolution",
    "Resize": "netspec has no upsampling layer", "Upsample": "netspec has no upsampling layer",
    "HardSigmoid": "nearest: sigmoid (a different curve)",
    "HardSwish": "nearest: silu (a smooth curve close to it)",
    "Mish": "nearest: silu", "Erf": "gelu (recognised as Div, Erf, Add, Mul, Mul)",
    "ReduceMean": "global_avgpool (ReduceMean over H and W)",
    "MatMul": "linear (MatMul of an (N, D) input by a constant matrix)",
    "Gemm": "linear (Gemm of an (N, D) input by constant weights)",
    "Transpose": "channel_shuffle (Reshape, Transpose (0, 2, 1, 3, 4), Reshape)",
    "Mul": "products inside recognised patterns only (batchnorm's affine, silu, gelu)",
    "Add": "add (of two layers' outputs of the same shape), or a bias after conv2d, linear "
           "or batchnorm",
    "LSTM": "netspec has no recurrent layers", "GRU": "netspec has no recurrent layers",
    "RNN": "netspec has no recurrent layers",
    "InstanceNormalization": "nearest: batchnorm", "LayerNormalization": "nearest: batchnorm",
    "GroupNormalization": "nearest: batchnorm",
    "Gather": "only shape arithmetic on constants is folded",
    "Shape": "only shape arithmetic on constants is folded",
    "GlobalMaxPool": "maxpool2d over the whole image",
}


def nearest_layer(op: str) -> str:
    if op in NEAREST:
        return NEAREST[op]
    from netspec.nn.layers import LAYERS

    close = difflib.get_close_matches(op.lower(), list(LAYERS), n=1, cutoff=0.6)
    return f"nearest netspec layer: {close[0]}" if close else ""


# ------------------------------------------------------------------ geometry


def spatial_pads(low: Lowering, node, x: str, kernel, strides, dilations) -> tuple | None:
    """(t, b, l, r) from a node's `pads` or `auto_pad`, or None for a layout netspec cannot
    express (not 2-D)."""
    at = low.attrs(node)
    auto = at.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        h, w = low.shape(x)[1:]
        out = []
        for n, k, s, d in zip((h, w), kernel, strides, dilations):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small = total // 2
            out.append((total - small, small) if auto == "SAME_LOWER" else (small, total - small))
        return out[0][0], out[0][1], out[1][0], out[1][1]
    if auto == "VALID":
        return 0, 0, 0, 0
    pads = at.get("pads", [0, 0, 0, 0])
    if len(pads) != 4:
        return None
    return pads[0], pads[2], pads[1], pads[3]


def written_pair(v):
    """(3, 3) -> 3, (3, 2) -> [3, 2]."""
    v = [int(i) for i in v]
    return v[0] if v[0] == v[1] else v


def reshaped(low: Lowering, node) -> tuple | None:
    """The per-sample output shape of a Reshape of a data value, None if it moves the batch."""
    target = low.const(node.input[1]) if len(node.input) > 1 else None
    if target is None:
        return None
    full = low.a.shapes[node.input[0]]
    out = reshape_target(full, target, low.attrs(node).get("allowzero", 0))
    return tuple(out[1:]) if out[0] == full[0] else None


def axis_slice(low: Lowering, node) -> tuple[int, int, int, int] | None:
    """(axis, start, stop, step) of a Slice of a data value along one axis, with its bounds
    clamped to that axis; None if not a single-axis slice with constant bounds."""
    at = low.attrs(node)
    if low.opset < 10:
        starts, ends = at.get("starts"), at.get("ends")
        axes, steps = at.get("axes"), None
    else:
        starts, ends = (low.const(node.input[i]) if len(node.input) > i and node.input[i]
                        else None for i in (1, 2))
        axes = low.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        steps = low.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if starts is None or ends is None:
        return None
    starts, ends = list(np.asarray(starts).reshape(-1)), list(np.asarray(ends).reshape(-1))
    full = low.a.shapes[node.input[0]]
    axes = list(np.asarray(axes).reshape(-1)) if axes is not None else list(range(len(starts)))
    steps = list(np.asarray(steps).reshape(-1)) if steps is not None else [1] * len(starts)
    real = []
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = int(ax) % len(full)
        b = slice_bounds(int(max(min(s, 2**62), -(2**62))), int(max(min(e, 2**62), -(2**62))),
                         int(st), full[ax])
        if b != (0, full[ax], 1):
            real.append((ax, *b))
    if not real:
        return (1, 0, full[1], 1)
    return real[0] if len(real) == 1 else None


def weight_hint(low: Lowering, node, index: int) -> str:
    """The layer's name from its weight's name ('features.0.weight' -> 'features.0',
    'gpu_0/conv1_w_0' -> 'conv1'), else from the node's name. A weight several nodes share
    (torch.onnx.export keeps one copy of equal tensors, e.g. fresh batchnorms' ones) names
    none of them: the node's name does, if it has one."""
    name = node.input[index] if len(node.input) > index else ""
    name = low.a.origin.get(name, name)
    if low.const_users.get(name, 0) > 1 and name_hint(node):
        return name_hint(node)
    for prefix in ("gpu_0/",):
        name = name.removeprefix(prefix)
    for suffix in (".weight", "_w_0", "_w", "/weight", "_W", ".scale", "_s_0", "_scale_0",
                   "_scale", "/kernel", "_bn_s_0"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name_hint(node)


def name_hint(node, k: int | None = None) -> str:
    """A name from the node's name: torch's '/layer1/layer1.0/conv1/Conv' -> 'layer1.0.conv1';
    '' for none or generic ones; with k, the k-th output's."""
    name = node.name.strip("/")
    if not name:
        return ""
    parts = [p for p in name.split("/") if p]
    if len(parts) > 1 and parts[-1].split("_")[0] == node.op_type:
        parts = parts[:-1]
    path, last = "", ""
    for p in parts:  # torch writes a Sequential's child as 'branch2.0' after 'branch2'
        if last and p.startswith(last + "."):
            path = path[:len(path) - len(last)] + p
        else:
            path = f"{path}.{p}" if path else p
        last = p
    return f"{path}_{k}" if k is not None and path else path


def yaml_float(v) -> float:
    """A float as it reads best in YAML (float32 noise rounded off: 0.100000001 -> 0.1)."""
    return float(np.format_float_positional(np.float32(v), unique=True)) if np.isfinite(v) \
        else float(v)
