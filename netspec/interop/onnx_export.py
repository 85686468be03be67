"""Export a network to ONNX: the graph builder and the file writer (`netspec export`).

    model = to_onnx(spec, plan, normalization)   # onnx.ModelProto, opset 17, IR version 8
    save(model, "lenet.onnx")                    # atomic; never overwrites a foreign file

Each layer maps itself, next to its forward and backward: `layer.to_onnx(g, x)` gets a
`LayerGraph` g (its names, shapes and arrays, and a node writer) and the ONNX value name of its
input, and returns the value name of its output. The builder walks shape inference's LayerInfo
list and wires every layer by the names of its producers (`info.inputs` when a graph spec gives
them, else the layer above), so layers with several inputs only need `to_onnx(g, *xs)`.

The model: input `input` (N, C, H, W) or (N, D), output `logits` (N, classes), N symbolic.
Nodes are named after their layers (`conv1`), initializers after netspec's parameters and
buffers (`conv1.weight`, `bn1.running_mean`), all float32. The spec's input normalisation is
stored as metadata (`netspec.normalize`, `netspec.mean`, `netspec.std`, `netspec.preprocess`),
with a checkpoint's class names (`netspec.classes`) and image or table preprocessing
(`netspec.image`, `netspec.columns`), not as a first node: the model takes exactly what
netspec's plan takes, so the two can be compared on the same array, and callers that already
normalise do not pay for it twice.
onnx is imported lazily (the `netspec[onnx]` extra); onnx_check.py verifies a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from netspec.errors import ExportError, OutputError, Problem

OPSET = 17
# ONNX 1.12's IR version, the first that carries opset 17. Runtimes refuse models whose IR
# version is newer than theirs, and onnx.helper.make_model would write the installed onnx's.
IR_VERSION = 8
INPUT, OUTPUT, BATCH = "input", "logits", "N"
PRODUCER = "netspec"
EXTRA = "pip install 'netspec[onnx]'"


def import_onnx():
    """The onnx module, or ExportError saying which extra to install."""
    try:
        import onnx
    except ImportError:
        raise ExportError(f"ONNX export needs the onnx package: {EXTRA}") from None
    return onnx


class LayerGraph:
    """What a layer's `to_onnx` gets: its name and shapes, its arrays, and a node writer."""

    def __init__(self, builder: _Builder, info):
        self._b = builder
        self.info = info
        self.name = info.name
        self.in_shape, self.out_shape = tuple(info.in_shape), tuple(info.out_shape)
        self._nodes = 0

    def param(self, key: str) -> str:
        """The initializer holding this layer's parameter or buffer `key` ('weight')."""
        full = f"{self.name}.{key}"
        self._b.initializer(full, self._b.state[full])
        return full

    def param_as(self, key: str, shape) -> str:
        """Like `param`, but the initializer holds the array reshaped to `shape` (PRelu's
        slope as (C, 1, 1), so that it broadcasts over (N, C, H, W)); its name stays the same."""
        full = f"{self.name}.{key}"
        self._b.initializer(full, np.reshape(self._b.state[full], shape))
        return full

    def constant(self, value, dtype=np.float32) -> str:
        """A Constant node holding `value` (a scalar or an array): min/max of a Clip, starts
        and ends of a Slice. Named 'layer/const', 'layer/const_2', ... (not initializers, so
        a model's initializers are exactly the network's parameters and buffers)."""
        name, k = f"{self.name}/const", 1
        while name in self._b.names:
            k += 1
            name = f"{self.name}/const_{k}"
        tensor = self._b.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        self._b.add_node("Constant", [], name, {"value": tensor})
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        """Append a node; return its output's name. The first node of a layer is named after
        the layer ('conv1'), later ones 'conv1/Op' ('conv1/Op_2', ...); each node's output is
        named as the node."""
        name = self.name if self._nodes == 0 else f"{self.name}/{op}"
        k = 1
        while name in self._b.names:
            k += 1
            name = f"{self.name}/{op}_{k}"
        self._nodes += 1
        self._b.add_node(op, inputs, name, attrs)
        return name

    def unsupported(self, reason: str) -> ExportError:
        """The error a layer raises for a configuration ONNX cannot express."""
        return self._b.layer_error(self.info, reason)


class _Builder:
    def __init__(self, spec, state: dict):
        self.onnx = import_onnx()
        self.spec, self.state = spec, state
        self.nodes, self.inits, self.names = [], {}, set()

    def initializer(self, name: str, value) -> None:
        if name not in self.inits:
            self.inits[name] = self.onnx.numpy_helper.from_array(
                np.ascontiguousarray(value, dtype=np.float32), name)

    def add_node(self, op, inputs, name, attrs) -> None:
        self.names.add(name)
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [name], name=name,
                                                     **attrs))

    def layer_error(self, info, reason: str) -> ExportError:
        return ExportError([self.spec.source.problem(("layers", info.index),
                                                     f"cannot export to ONNX: {reason}")])

    def rename(self, old: str, new: str) -> None:
        """Rename a value everywhere (the network's last value becomes `logits`)."""
        for node in self.nodes:
            node.input[:] = [new if v == old else v for v in node.input]
            node.output[:] = [new if v == old else v for v in node.output]


def build_graph(spec, state: dict) -> tuple[list, list, dict]:
    """(nodes, initializers, {layer name: output value name}) for `spec` with `state`."""
    b = _Builder(spec, state)
    values = {INPUT: INPUT}  # producer name -> ONNX value name
    outputs = {}
    for info in spec.infos:  # info.inputs: the producers it reads (shape inference resolved them)
        if info.name == INPUT or (info.name == OUTPUT and info is not spec.infos[-1]):
            raise b.layer_error(info, f"'{info.name}' names the model's {info.name}, so no layer "
                                      "can have that name (but the last may be 'logits'); "
                                      "rename the layer")
        to_onnx = getattr(info.layer, "to_onnx", None)
        if to_onnx is None:
            raise b.layer_error(info, f"layer type '{info.type}' has no ONNX mapping yet; add a "
                                      f"to_onnx method to its class in netspec/nn/layers/")
        missing = [p for p in info.inputs if p not in values]
        if missing:
            raise b.layer_error(info, f"its input {missing[0]!r} is not an earlier layer")
        xs = [values[p] for p in info.inputs]
        outputs[info.name] = values[info.name] = to_onnx(LayerGraph(b, info), *xs)
    last = outputs[spec.infos[-1].name]
    produced = {o for node in b.nodes for o in node.output}
    if last in produced and last != INPUT:
        b.rename(last, OUTPUT)
        outputs = {k: OUTPUT if v == last else v for k, v in outputs.items()}
    else:  # the network's last layers are all identities (dropout): name the output anyway
        b.add_node("Identity", [last], OUTPUT, {})
    return b.nodes, list(b.inits.values()), outputs


def to_onnx(spec, plan, normalization: dict | None = None, source: str = "",
            data: dict | None = None):
    """An onnx.ModelProto of `spec` with `plan`'s parameters and buffers (eval mode).

    `normalization` ({"normalize", "mean", "std"[, "unit"]}) is recorded as metadata, and so
    are the class names and input preprocessing of `data` (a checkpoint's meta["data"]);
    `source` says where the weights came from (a checkpoint path). {"normalize": "standardize",
    "initial": True} records the mode without a mean and std (initial weights exported without
    data). Raises ExportError for a layer that cannot map.
    """
    onnx = import_onnx()
    helper, tp = onnx.helper, onnx.TensorProto
    nodes, inits, _ = build_graph(spec, plan.state_dict())
    classes = spec.infos[-1].out_shape
    graph = helper.make_graph(
        nodes, spec.name, [helper.make_tensor_value_info(INPUT, tp.FLOAT, [BATCH, *plan.in_shape])],
        [helper.make_tensor_value_info(OUTPUT, tp.FLOAT, [BATCH, *classes])], inits,
        doc_string=f"netspec network '{spec.name}': {len(spec.infos)} layers, eval mode")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, producer_version=_version(),
                              ir_version=IR_VERSION)
    meta = {"netspec.spec": spec.to_yaml(), "netspec.spec_sha256": spec.digest(),
            "netspec.weights": source or f"initial weights (seed {spec.seed})",
            **metadata_of(normalization, spec), **data_metadata(data, spec)}
    helper.set_model_props(model, meta)
    return model


def metadata_of(normalization: dict | None, spec) -> dict[str, str]:
    """The normalisation as metadata: mode, mean, std (a number, or a JSON list with one per
    channel or feature), and the formula a caller applies."""
    norm = dict(normalization or {})
    mode = norm.get("normalize") or spec.data.normalize
    shape = ", ".join(str(d) for d in spec.input.shape)
    if mode == "none":
        return {"netspec.normalize": "none",
                "netspec.preprocess": f"input = the values as float32, shape (N, {shape})"}
    mean, std = norm.get("mean"), norm.get("std")
    if mode == "scale":
        mean, std = 0.0, 1.0
    if (mean is None or std is None) and norm.get("initial"):
        return {"netspec.normalize": mode,
                "netspec.preprocess": f"input = (pixels / 255 - mean) / std as float32, shape "
                                      f"(N, {shape}), with the training set's mean and std: "
                                      "not recorded, since these are initial weights exported "
                                      "without the data (export a trained checkpoint, or give "
                                      "--data-dir, to record them)"}
    if mean is None or std is None:
        raise ExportError(f"normalize '{mode}' needs the training set's mean and std; give a "
                          "checkpoint from `netspec train`, or the data (--data-dir)")
    unit = float(norm.get("unit", 255.0))
    per = isinstance(mean, (list, tuple)) and len(mean) > 1
    where = ("[c] per channel c" if len(spec.input.shape) == 3 else "[d] per feature d") \
        if per else ""
    value = "pixels / 255" if unit == 255.0 else "values"

    def text(v):
        return json.dumps([float(a) for a in v]) if per else repr(float(np.ravel(v)[0]))
    return {"netspec.normalize": mode, "netspec.mean": text(mean), "netspec.std": text(std),
            "netspec.preprocess": f"input = ({value} - mean{where}) / std{where} as float32, "
                                  f"shape (N, {shape})"}


def data_metadata(data: dict | None, spec) -> dict[str, str]:
    """Class names, and how a file becomes an input (image settings, table columns), as JSON
    metadata: netspec.classes, netspec.image, netspec.columns."""
    data = data or {}
    out = {}
    classes = spec.data.classes or data.get("classes")
    if classes:
        out["netspec.classes"] = json.dumps(list(classes))
    if data.get("image"):
        out["netspec.image"] = json.dumps(data["image"])
    if data.get("columns"):
        out["netspec.columns"] = json.dumps({"features": data["columns"],
                                             "label": data.get("label_column")})
    return out


def _version() -> str:
    from netspec.version import __version__

    return __version__


# ------------------------------------------------------------------ writing


def written_by_netspec(path: Path) -> bool:
    """True when `path` is an ONNX model that netspec wrote (producer_name 'netspec')."""
    onnx = import_onnx()
    from google.protobuf.message import DecodeError  # onnx's own dependency

    model = onnx.ModelProto()
    try:  # the bytes as a model, whatever the name (onnx.load reads `x.json` as JSON text)
        with open(path, "rb") as f:
            model.ParseFromString(f.read())
    except (DecodeError, OSError, ValueError, RuntimeError):  # not a model, or unreadable
        return False
    return model.producer_name == PRODUCER


def save(model, path: str | Path) -> Path:
    """Write `model` atomically (fsio.atomic_write). An existing file is replaced only when
    netspec wrote it; anything else there is an OutputError, and the file is left as it is."""
    from netspec.fsio import atomic_write, make_dirs

    path = check_output(path)
    make_dirs(path.parent)
    return atomic_write(path, model.SerializeToString())


def check_output(path: str | Path) -> Path:
    """`path` if a model may be written there (the CLI asks before doing any work)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError([Problem(f"it is a directory; give a file name such as "
                                   f"{path / 'model.onnx'}", file=str(path))])
    if path.exists() and not written_by_netspec(path):
        raise OutputError([Problem("the file exists and netspec did not write it; remove it or "
                                   "choose another -o file", file=str(path))])
    return path
