"""Reading an untrusted ONNX model safely: size caps, external data, and the graph's structure.

    model = read(path)              # or read_proto(model) for a ModelProto already in memory
    graph = Graph.of(model)         # nodes in a topological order; raises ModelError

What is refused, each with a message that names the file or the node:
  * a file larger than MAX_FILE_BYTES, a tensor of more than MAX_TENSOR_ELEMENTS values, or
    weights adding up to more than MAX_WEIGHT_BYTES (sizes are read from the declared dims
    before any data is touched);
  * external data (weights in side files) whose location is absolute or leads outside the
    model's folder (`../`, symbolic links), or points past the end of its file;
  * an opset outside 7..21 of the default domain;
  * duplicate names (two producers of one value), inputs that nothing produces (dangling), and
    cycles; subgraphs (If, Loop) are checked when the importer inlines them.
Nothing here allocates a tensor from the model before its size has been checked.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netspec.errors import ModelError, Problem

MAX_FILE_BYTES = 2 << 30  # protobuf's own limit for one message
MAX_WEIGHT_BYTES = 4 << 30  # initializers, constants and external data together
MAX_TENSOR_ELEMENTS = 2**31  # as netspec's shape inference (8 GiB of float32)
MAX_NODES = 200_000
# The default domain's versions the importer reads: 7 to 21 as exporters and the model zoo write
# them, and the later ones the installed onnx knows (22 and up only widen the types that the
# operators netspec maps accept: bfloat16, int4, float8).
OPSETS_TESTED = range(7, 22)
EXTRA = "pip install 'netspec[onnx]'"


def import_onnx():
    """The onnx module, or ModelError naming the extra to install."""
    try:
        import onnx
    except ImportError:
        raise ModelError(f"importing ONNX models needs the onnx package: {EXTRA}") from None
    return onnx


def read(path: str | Path):
    """Load the model at `path` (and its external data, checked) as a ModelProto."""
    onnx = import_onnx()
    path = Path(path)
    where = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelError([Problem("no such file", file=where)]) from None
    except OSError as e:
        raise ModelError([Problem(f"cannot read it: {e.strerror or e}", file=where)]) from None
    if not path.is_file():
        raise ModelError([Problem("not a regular file; give an .onnx model file", file=where)])
    if size > MAX_FILE_BYTES:
        raise ModelError([Problem(f"the file is {size / 2**30:.1f} GiB, more than an ONNX "
                                  f"model can be ({MAX_FILE_BYTES >> 30} GiB); large weights "
                                  "belong in external data files beside it", file=where)])
    from google.protobuf.message import DecodeError  # onnx's own dependency

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError([Problem(f"not an ONNX model ({type(e).__name__}: "
                                  f"{str(e).strip()[:200] or 'cannot be parsed'}); give an "
                                  ".onnx file", file=where)]) from None
    except OSError as e:
        raise ModelError([Problem(f"cannot read it: {e.strerror or e}", file=where)]) from None
    check_sizes(model, where)
    load_external(model, path.parent, where)
    return model


def check_sizes(model, where: str = "the model") -> None:
    """Refuse tensors with too many values, and too many weights in all, from declared dims."""
    onnx = import_onnx()
    total, problems = 0, []
    for t in _all_tensors(model.graph):
        n = math.prod(t.dims) if t.dims else 1
        if any(d < 0 for d in t.dims):
            problems.append(Problem(f"tensor '{t.name}' has negative dims {list(t.dims)}",
                                    file=where))
            continue
        itemsize = _itemsize(onnx, t.data_type)
        if n > MAX_TENSOR_ELEMENTS:
            problems.append(Problem(
                f"tensor '{t.name}' declares {list(t.dims)}: {n:,} values "
                f"({n * itemsize / 2**30:,.1f} GiB), more than netspec allocates for one tensor "
                f"({MAX_TENSOR_ELEMENTS:,} values)", file=where))
        total += n * itemsize
    if total > MAX_WEIGHT_BYTES:
        problems.append(Problem(f"the weights add up to {total / 2**30:,.1f} GiB, more than the "
                                f"importer reads ({MAX_WEIGHT_BYTES >> 30} GiB)", file=where))
    if len(model.graph.node) > MAX_NODES:
        problems.append(Problem(f"{len(model.graph.node):,} nodes, more than the importer reads "
                                f"({MAX_NODES:,})", file=where))
    if problems:
        raise ModelError(problems)


def load_external(model, folder: Path, where: str) -> None:
    """Read every external-data tensor from files inside `folder` (checked, see the module
    docstring), into the tensor's raw_data."""
    onnx = import_onnx()
    base = Path(os.path.realpath(folder))
    problems = []
    for t in _all_tensors(model.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        target = Path(os.path.realpath(base / loc))
        if not loc or os.path.isabs(loc) or not target.is_relative_to(base):
            problems.append(Problem(
                f"tensor '{t.name}' keeps its data in '{loc}', outside the model's folder "
                f"{base}; the importer reads external data only from files beside the model "
                "(copy them there)", file=where))
            continue
        offset, want = int(info.get("offset", 0)), math.prod(t.dims) * _itemsize(
            onnx, t.data_type)
        length = int(info.get("length", want))
        try:
            size = target.stat().st_size
        except OSError as e:
            problems.append(Problem(f"tensor '{t.name}': cannot read its external data "
                                    f"'{loc}': {e.strerror or e}", file=where))
            continue
        if length != want or offset < 0 or offset + length > size:
            problems.append(Problem(
                f"tensor '{t.name}': external data '{loc}' holds {size:,} bytes, and the tensor "
                f"needs {want:,} from offset {offset:,} (declared length {length:,})",
                file=where))
            continue
        with open(target, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(length)
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]
    if problems:
        raise ModelError(problems)


def _all_tensors(graph):
    """Initializers and Constant node values, of the graph and of its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def _itemsize(onnx, data_type: int) -> int:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return 8


# ------------------------------------------------------------------ the graph


@dataclass
class Graph:
    """A model's main graph, checked: nodes in topological order and who produces what."""

    model: object
    nodes: list  # NodeProto, topologically sorted
    position: dict  # id(node) -> its index in the file's node list (for messages)
    inputs: list  # ValueInfoProto of the graph inputs that are not initializers
    outputs: list  # ValueInfoProto
    initializers: dict  # name -> TensorProto
    opset: int
    where: str = "the model"
    domains: dict = field(default_factory=dict)
    converted_from: int | None = None  # the opset before onnx.version_converter, if it ran

    @classmethod
    def of(cls, model, where: str = "the model") -> Graph:
        g = model.graph
        domains = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        opset = domains.get("ai.onnx")
        newest = max(OPSETS_TESTED.stop - 1, import_onnx().defs.onnx_opset_version())
        if opset is None or not OPSETS_TESTED.start <= opset <= newest:
            found = f"opset {opset}" if opset is not None else "no default-domain opset"
            raise ModelError([Problem(
                f"{found}; the importer reads opsets {OPSETS_TESTED.start} to {newest} "
                "(convert the model with onnx.version_converter.convert_version)", file=where)])
        inits = {t.name: t for t in g.initializer}
        inputs = [v for v in g.input if v.name not in inits]
        listed = list(g.node)  # one Python object per node: ids key the maps below
        position = {id(n): i for i, n in enumerate(listed)}
        nodes = topological(listed, set(inits) | {v.name for v in inputs}, position,
                            [o.name for o in g.output], where)
        return cls(model, nodes, position, inputs, list(g.output), inits, opset, where, domains)

    def describe(self, node) -> str:
        """"node 12 'conv1' (Conv)" for messages."""
        return describe(node, self.position.get(id(node)))


def describe(node, index=None) -> str:
    at = f"node {index} " if index is not None else "node "
    return f"{at}'{node.name}' ({node.op_type})" if node.name else f"{at}({node.op_type})"


def topological(nodes, given: set, position: dict, outputs: list, where: str) -> list:
    """`nodes` in an order where every input is produced first (Kahn's algorithm, keeping the
    file's order among ready nodes); ModelError for duplicates, dangling inputs and cycles."""
    problems = []
    producer: dict[str, object] = {}
    for node in nodes:
        for out in node.output:
            if not out:
                continue
            if out in given or out in producer:
                first = "a graph input or initializer" if out in given else describe(
                    producer[out], position.get(id(producer[out])))
                problems.append(Problem(f"{describe(node, position.get(id(node)))} writes "
                                        f"'{out}', which {first} already defines; every value "
                                        "must have one producer", file=where))
            else:
                producer[out] = node
    known = given | set(producer)
    for node in nodes:
        for name in node.input:
            if name and name not in known:
                problems.append(Problem(f"{describe(node, position.get(id(node)))} reads "
                                        f"'{name}', which no node, input or initializer "
                                        "defines (a dangling input)", file=where))
    for name in outputs:
        if name not in known:
            problems.append(Problem(f"graph output '{name}' is produced by no node", file=where))
    if problems:
        raise ModelError(problems)
    waiting = {id(n): sum(1 for i in set(n.input) if i in producer) for n in nodes}
    readers: dict[str, list] = {}
    for n in nodes:
        for i in set(n.input):
            if i in producer:
                readers.setdefault(i, []).append(n)
    ready = [n for n in nodes if waiting[id(n)] == 0]
    order, done = [], set()
    while ready:
        ready.sort(key=lambda n: position.get(id(n), 0))
        n = ready.pop(0)
        order.append(n)
        done.add(id(n))
        for out in n.output:
            for r in readers.get(out, []):
                waiting[id(r)] -= 1
                if waiting[id(r)] == 0:
                    ready.append(r)
    if len(order) != len(nodes):
        stuck = [describe(n, position.get(id(n))) for n in nodes if id(n) not in done]
        raise ModelError([Problem(f"the graph has a cycle through {len(stuck)} nodes: "
                                  f"{', '.join(stuck[:8])}{' ...' if len(stuck) > 8 else ''}",
                                  file=where)])
    return order
