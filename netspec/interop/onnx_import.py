"""Import an ONNX model as a netspec spec and weights (`netspec import`, the ONNX backend).

    imported = import_model("resnet50.onnx")          # or a ModelProto; raises ModelError
    imported.text      # the spec, as YAML a person would write
    imported.spec      # the same, validated (NetSpec)
    imported.state     # {"conv1.weight": array, ...}: a plan's state_dict, float32
    save(imported, "resnet50.yaml", "resnet50.npz")  # atomic; never overwrites others' files

The steps: onnx_read (sizes, external data, structure), onnx_fold (constants and shapes, before
any large allocation), `lower` here with onnx_layers' and onnx_activations' handlers on
onnx_lower's Lowering (patterns to layers).
Every unsupported node is reported at once, before anything is written. Then the layers get
names (from the weights' names, else the nodes', made valid and unique), `inputs:` only where
a layer does not read the layer above it, and the spec is loaded back: its shape at every layer
must equal ONNX's, or the import is a bug and says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from netspec.errors import ModelError, OutputError, Problem
from netspec.interop import onnx_activations, onnx_layers
from netspec.interop.onnx_fold import Analysis, analyse
from netspec.interop.onnx_lower import Lowered, Lowering
from netspec.interop.onnx_read import Graph, check_sizes, import_onnx, read

HEADER = "# Imported from"  # first words of every spec the importer writes
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
GENERIC = re.compile(r"^(?:[nr]|node|onnx__\w*|_+\w*|\d+\w*)_?\d*$")
RESERVED = {"input", "in", "logits"}


@dataclass
class Imported:
    text: str
    spec: object
    state: dict
    output_shape: tuple  # per sample, as the ONNX model gives it
    source: dict = field(default_factory=dict)  # file, producer, opset, ...


def import_model(source, input_shape=None, name: str | None = None) -> Imported:
    """Import a model file (str or Path) or ModelProto; see the module docstring."""
    import_onnx()
    if isinstance(source, (str, Path)):
        model, where = read(source), str(source)
    else:
        model, where = source, "the model"
        check_sizes(model, where)
    model, converted = _upgraded(model, where)
    graph = Graph.of(model, where)
    graph.converted_from = converted
    if len(graph.outputs) != 1:
        raise ModelError([Problem(f"the graph has {len(graph.outputs)} outputs; a netspec "
                                  "network has one", file=where)])
    a = analyse(graph, tuple(input_shape) if input_shape is not None else None)
    low = lower(a)
    problems = a.problems + low.problems
    if problems:
        count = len(problems)
        problems.append(Problem(f"{count} node{'s' * (count != 1)} cannot be imported; nothing "
                                "was written", file=where))
        raise ModelError(problems)
    out_value = graph.outputs[0].name
    out_value = low.alias.get(out_value, out_value)
    while out_value in low.alias:
        out_value = low.alias[out_value]
    layers = _reachable(low.layers, out_value, a)
    source = _source(model, where, graph)
    if converted:
        source["converted_from"] = converted
    stem = name or _stem(model, where)
    text, state = _write(layers, a, graph.inputs[0].name, out_value, source, stem)
    from netspec.spec.model import loads

    spec = loads(text, f"{stem}.yaml (imported)")
    _check_shapes(spec, layers, a, where)
    onnx_out = graph.outputs[0].name
    out_shape = tuple(a.shapes.get(onnx_out, a.shapes[out_value])[1:])
    return Imported(text, spec, state, out_shape, source)


OLDEST_CONVERTED = 1  # opsets below 7 are converted (to UPGRADE_TO) by onnx's version_converter
UPGRADE_TO = 9


def _upgraded(model, where: str):
    """(model, original opset): a model of opset 1..6 converted by onnx.version_converter to
    opset 9 (Add's broadcast attribute, BatchNormalization's is_test and spatial...), so that
    the importer reads one set of semantics; (model, None) for the others."""
    onnx = import_onnx()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OLDEST_CONVERTED <= opset < 7:
        return model, None
    try:
        return onnx.version_converter.convert_version(model, UPGRADE_TO), opset
    except (RuntimeError, ValueError, onnx.checker.ValidationError) as e:
        raise ModelError([Problem(f"opset {opset} could not be converted to {UPGRADE_TO} by "
                                  f"onnx.version_converter ({str(e).strip()[:200]}); the "
                                  "importer reads opsets 7 and later", file=where)]) from None


def lower(a: Analysis) -> Lowered:
    """Visit every data-path node that the graph's outputs need (see the module docstring).

    A node no handler takes waits: a later node's pattern may take it (the Greater of a
    softplus threshold, a Mul before a Softplus); what is left at the end is reported."""
    low = Lowering(a)
    needed = _needed(a)
    waiting = []
    for node in a.nodes:
        if id(node) in low.done or id(node) not in needed:
            continue
        if onnx_activations.match(low, node):
            continue
        handler = onnx_layers.HANDLERS.get(node.op_type)
        if handler is None or node.domain not in ("", "ai.onnx"):
            waiting.append(node)
            continue
        handler(low, node)
    for node in waiting:
        if id(node) not in low.done:
            low.unsupported(node, f"netspec has no layer for {node.op_type}"
                                  + (f" (domain {node.domain})" if node.domain else ""))
    return Lowered(low.layers, low.alias, low.problems)


def _needed(a: Analysis) -> set[int]:
    """The data-path nodes the graph outputs depend on (the others are dead code)."""
    producer = {o: n for n in a.nodes for o in n.output if o}
    stack = [o.name for o in a.graph.outputs]
    seen_values, needed = set(), set()
    while stack:
        v = stack.pop()
        if v in seen_values or v not in producer:
            continue
        seen_values.add(v)
        node = producer[v]
        needed.add(id(node))
        stack += [i for i in node.input if i]
    return needed


def _reachable(layers, out_value: str, a) -> list:
    """The layers the output needs, in order (dead branches dropped); ModelError if the
    output is the input itself."""
    by_output = {layer.output: layer for layer in layers}
    if out_value not in by_output:
        raise ModelError([Problem("the model computes nothing netspec keeps: its output is its "
                                  "input (only identities)", file=a.graph.where)])
    keep, stack = set(), [out_value]
    while stack:
        v = stack.pop()
        layer = by_output.get(v)
        if layer is None or id(layer) in keep:
            continue
        keep.add(id(layer))
        stack += layer.inputs
    return [layer for layer in layers if id(layer) in keep]


def _source(model, where: str, graph) -> dict:
    return {"file": Path(where).name if where != "the model" else "",
            "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p),
            "opset": graph.opset, "ir_version": model.ir_version,
            "graph": model.graph.name, "nodes": len(model.graph.node)}


def _stem(model, where: str) -> str:
    base = Path(where).stem if where != "the model" else (model.graph.name or "imported")
    return re.sub(r"[^A-Za-z0-9_.-]", "-", base).strip("-.") or "imported"


# ------------------------------------------------------------------ names and the YAML


def clean(hint: str) -> str:
    """A valid netspec layer name from a model's name, or '' for none / a generic one.
    Caffe's '/' nests as torch's '.' does: 'inception_3a/1x1' -> 'inception_3a.1x1'."""
    parts = [re.sub(r"[^A-Za-z0-9_]", "_", p) for p in re.split(r"[./]", hint)]
    parts = [p for p in parts if p]
    if not parts:
        return ""
    if not re.match(r"[A-Za-z_]", parts[0]):
        parts[0] = "n" + parts[0]
    name = ".".join(parts)
    if GENERIC.match(name) or not NAME.match(name) or _default_name(name):
        return ""
    return name


def _default_name(name: str) -> bool:
    """True for netspec's own default names, <type><index> ('relu2'): not worth keeping."""
    from netspec.nn.layers import LAYERS

    m = re.fullmatch(r"([a-z_0-9]+?)(\d+)", name)
    return bool(m) and m.group(1) in LAYERS


def _names(layers) -> list[str | None]:
    """Each layer's name: its cleaned hint made unique, or None (netspec's default name)
    for a parameter-free layer nobody refers to by name."""
    hints = [clean(layer.hint) for layer in layers]
    groups = {h.rsplit(".", 1)[0] for h in hints if "." in h}
    groups |= {".".join(h.split(".")[:k]) for h in hints for k in range(1, h.count(".") + 1)}
    names, used = [], set()
    above = [None] + [layer.output for layer in layers[:-1]]
    written = [layer for layer, up in zip(layers, above) if layer.inputs != [up]]
    for i, (layer, hint) in enumerate(zip(layers, hints)):
        referenced = any(layer.output in w.inputs for w in written)
        if hint in groups:  # torch's '/layer1/layer1.0/Add' names the container layer1.0
            hint = f"{hint}.{layer.fields['type']}"
        if not hint and referenced:  # written out, as netspec would name it anyway
            hint = f"{layer.fields['type']}{i}"
        if not hint:
            names.append(None)
            continue
        if hint in RESERVED:
            hint += "_"
        base, k = hint, 2
        while hint in used or hint in groups - {base}:
            hint, k = f"{base}_{k}", k + 1
        used.add(hint)
        names.append(hint)
    auto = {f"{layer.fields['type']}{i}" for i, (layer, n) in enumerate(zip(layers, names))
            if n is None}
    return [f"{n}_" if n in auto else n for n in names]  # never another layer's default name


def _write(layers, a, input_value: str, out_value: str, source: dict, stem: str):
    """(spec YAML text, state dict) for the lowered layers."""
    names = _names(layers)
    final = [n if n is not None else f"{layer.fields['type']}{i}"
             for i, (layer, n) in enumerate(zip(layers, names))]
    producer = {input_value: "input"}
    lines, state = [], {}
    for i, (layer, name) in enumerate(zip(layers, names)):
        item = {"type": layer.fields["type"]}
        if name is not None:
            item["name"] = name
        item.update((k, v) for k, v in layer.fields.items() if k != "type")
        ins = [producer[v] for v in layer.inputs]
        above = final[i - 1] if i else "input"
        if ins != [above]:
            item["inputs"] = ins
        producer[layer.output] = final[i]
        lines.append("  - " + yaml.safe_dump(item, default_flow_style=True, width=10_000,
                                             sort_keys=False).strip())
        for key, value in layer.params.items():
            state[f"{final[i]}.{key}"] = value
    out = a.shapes[out_value][1:]
    ending, loss = _ending(layers[-1], out)
    lines += ending
    classes = out[0] if len(out) == 1 or tuple(out[1:]) == (1, 1) else None
    shape = list(a.shapes[input_value][1:])
    head = [f"{HEADER} {source['file'] or 'an ONNX model'} by netspec import",
            (f"# producer: {source['producer'] or 'unknown'}; opset {source['opset']}"
             + (f" (converted from {source['converted_from']})" if "converted_from" in source
                else "") + f", IR "
             f"version {source['ir_version']}; graph '{source['graph']}', {source['nodes']} "
             f"nodes -> {len(layers)} layers"),
            "# Set data to a directory of IDX files with these shapes; the model's own input",
            "# preprocessing is not part of ONNX, so normalize is 'none' here."]
    body = [f"name: {stem}", f"input: {{shape: {shape}}}", "layers:", *lines,
            f"loss: {loss}",
            "data: {dataset: custom, normalize: none"
            + (f", num_classes: {classes}" if classes else "") + "}"]
    return "\n".join(head + body) + "\n", state


def _ending(last, out) -> tuple[list[str], str]:
    """A flatten for a (K, 1, 1) output (so the net ends in class scores), and the loss that
    fits what the net ends with."""
    ending = ["  - {type: flatten}"] if len(out) == 3 and tuple(out[1:]) == (1, 1) else []
    kind = last.fields["type"]
    if kind == "softmax":
        return ending, "{type: nll, input: probabilities}"
    if kind == "log_softmax":
        return ending, "{type: nll}"
    return ending, "{type: cross_entropy}"


def _check_shapes(spec, layers, a, where: str) -> None:
    """netspec's shape at every imported layer equals ONNX's (else the importer has a bug)."""
    for info, layer in zip(spec.infos, layers):
        want = tuple(a.shapes[layer.output][1:]) if layer.output in a.shapes else None
        if want is not None and tuple(info.out_shape) != want:
            raise ModelError([Problem(
                f"internal error: layer '{info.name}' ({info.type}) has shape "
                f"{tuple(info.out_shape)} in netspec but {want} in the model; please report "
                "this with the model", file=where)])


def state_of(imported: Imported) -> dict:
    """The weights as the spec's plan wants them (reshaped to the parameter shapes)."""
    out = {}
    for info in imported.spec.infos:
        for key, shape in {**info.param_shapes, **info.buffer_shapes}.items():
            full = f"{info.name}.{key}"
            value = imported.state.get(full)
            if value is None:
                raise ModelError(f"internal error: no value for {full}")
            out[full] = np.asarray(value, np.float32).reshape(shape)
    return out


# ------------------------------------------------------------------ writing


def check_outputs(spec_path: Path, weights_path: Path | None) -> None:
    """OutputError unless both files may be written: absent, or written by netspec import."""
    for path, ours in ((spec_path, _our_spec), (weights_path, _our_weights)):
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise OutputError([Problem("it is a directory; give a file name", file=str(path))])
        if path.exists() and not ours(path):
            raise OutputError([Problem("the file exists and netspec import did not write it; "
                                       "remove it or choose another name", file=str(path))])


def _our_spec(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(HEADER)).decode("utf-8", "replace") == HEADER
    except OSError:
        return False


def _our_weights(path: Path) -> bool:
    from netspec import checkpoint

    try:
        return "imported_from" in checkpoint.load(path).meta
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def save(imported: Imported, spec_path, weights_path=None) -> None:
    """Write the spec (and the weights as a netspec checkpoint) atomically."""
    from netspec import checkpoint
    from netspec.fsio import atomic_write, make_dirs
    from netspec.version import __version__

    spec_path = Path(spec_path)
    check_outputs(spec_path, weights_path)
    make_dirs(spec_path.parent)
    if weights_path is not None:
        spec = imported.spec
        meta = {"spec": spec.model_dump(mode="json"), "spec_sha256": spec.digest(),
                "netspec_version": __version__, "imported_from": imported.source}
        make_dirs(Path(weights_path).parent)
        checkpoint.save(weights_path, state_of(imported), {}, meta)
    atomic_write(spec_path, imported.text)
