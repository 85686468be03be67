"""Static analysis of an ONNX graph for the importer: constant folding and shape inference.

    a = analyse(graph, input_shape)   # Analysis: consts, shapes, dtypes, the data-path nodes

Walking the nodes in order, every node is one of:
  * constant: Constant, ConstantOfShape, and any node of FOLD whose inputs are all constants,
    evaluated here with NumPy. Shape and Size of a data tensor are constants too, since the
    input shape is static: the shape arithmetic that torch.onnx.export writes for `chunk`,
    `view` and channel shuffles (Shape, Gather, Unsqueeze, Concat, Div, Mul, Cast, Slice feeding
    a Reshape or Slice) folds into plain numbers. An If whose condition folds is replaced by the
    branch it takes.
  * data path: everything else. Its output shapes come from ONNX's own shape inference run on
    that one node with its concrete input shapes (and small constant inputs as values), so every
    ONNX operator gets its exact shape rule.
Every size is checked against MAX_TENSOR_ELEMENTS before anything is computed or allocated:
a model that declares 10^9 channels fails here with the memory it would need. The batch size is
the model's own when it fixes one (Caffe2's models fix 1), else 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netspec.errors import ModelError, Problem
from netspec.interop.onnx_eval import (
    FOLD,
    KEEPS_NAME,
    SMALL,
    attrs_of,
    check_size,
    evaluate,
    np_dtype,
)
from netspec.interop.onnx_read import Graph, import_onnx


@dataclass
class Analysis:
    graph: Graph
    batch: int
    consts: dict = field(default_factory=dict)  # value name -> np.ndarray
    shapes: dict = field(default_factory=dict)  # data value -> full shape (batch first)
    dtypes: dict = field(default_factory=dict)  # data value -> numpy dtype
    nodes: list = field(default_factory=list)  # the data-path nodes, in order
    position: dict = field(default_factory=dict)  # id(node) -> index for messages
    problems: list = field(default_factory=list)  # nodes that could not be analysed
    read: set = field(default_factory=set)  # every value some node or the graph reads
    origin: dict = field(default_factory=dict)  # folded constant -> the initializer it came from

    def describe(self, node) -> str:
        from netspec.interop.onnx_read import describe

        return describe(node, self.position.get(id(node)))

    def problem(self, node, message: str) -> Problem:
        return Problem(message, path=self.describe(node), file=self.graph.where)


def analyse(graph: Graph, input_shape: tuple | None = None) -> Analysis:
    """Fold constants and infer every data value's shape (see the module docstring).

    A node whose shape cannot be inferred is a problem in `problems` (the nodes after it are
    not analysed); a tensor too large to allocate is a ModelError at once."""
    onnx = import_onnx()
    nh = onnx.numpy_helper
    if len(graph.inputs) != 1:
        names = ", ".join(v.name for v in graph.inputs) or "none"
        raise ModelError([Problem(f"the graph has {len(graph.inputs)} inputs ({names}); a "
                                  "netspec network has exactly one", file=graph.where)])
    (inp,) = graph.inputs
    shape, batch = _input_shape(inp, input_shape, graph.where)
    a = Analysis(graph, batch, position=dict(graph.position))
    a.shapes[inp.name] = shape
    a.dtypes[inp.name] = np_dtype(onnx, inp.type.tensor_type.elem_type)
    for name, t in graph.initializers.items():
        a.consts[name] = nh.to_array(t)
    check_size(a, None, inp.name, shape)
    work = list(graph.nodes)
    cache: dict = {}
    a.read = {i for n in work for i in n.input} | {o.name for o in graph.outputs}
    while work:
        node = work.pop(0)
        if node.op_type == "If" and node.input[0] in a.consts:
            work[:0] = _inline(onnx, node, a)
            continue
        if _foldable(node, a):
            try:
                outs = evaluate(onnx, node, a)
            except (ValueError, IndexError, TypeError, ArithmeticError) as e:
                a.problems.append(a.problem(node, f"cannot evaluate this constant: {e}"))
                continue
            big = (node.input[0] if node.op_type in KEEPS_NAME and node.input[0] in a.consts
                   else None)
            for name, value in zip(node.output, outs):
                if name:
                    a.consts[name] = value
                    if big is not None:  # a weight reshaped or cast keeps its weight's name
                        a.origin[name] = a.origin.get(big, big)
            continue
        if any(n and n not in a.shapes and n not in a.consts for n in node.input):
            continue  # an input's shape is unknown (a problem was reported upstream)
        _infer(onnx, node, a, cache)
    return a


def _input_shape(inp, given, where) -> tuple[tuple, int]:
    dims = inp.type.tensor_type.shape.dim
    declared = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in dims]
    if given is not None:
        if len(dims) and len(given) + 1 != len(dims):
            raise ModelError([Problem(f"--input-shape {list(given)} has {len(given)} dims but "
                                      f"the model's input '{inp.name}' has {len(dims) - 1} "
                                      "besides the batch", file=where)])
        batch = declared[0] if declared and declared[0] else 1
        return (batch, *given), batch
    if not dims or any(d is None for d in declared[1:]):
        shown = [d.dim_param or d.dim_value or "?" for d in dims]
        raise ModelError([Problem(f"the input '{inp.name}' has shape {shown}, not fixed; give "
                                  "the shape of one sample with --input-shape, e.g. "
                                  "--input-shape 3,224,224", file=where)])
    batch = declared[0] or 1
    return (batch, *declared[1:]), batch


def _foldable(node, a: Analysis) -> bool:
    if node.op_type == "Constant":
        return True
    if node.op_type not in FOLD or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in ("Shape", "Size"):
        return node.input[0] in a.shapes or node.input[0] in a.consts
    if node.op_type == "CastLike":  # a constant cast to the type of a data value
        return node.input[0] in a.consts and (node.input[1] in a.dtypes
                                               or node.input[1] in a.consts)
    return all(not n or n in a.consts for n in node.input)


def _inline(onnx, node, a: Analysis) -> list:
    """The nodes of the branch an If takes (its condition folded), renamed apart, and an
    Identity per If output."""
    cond = bool(np.asarray(a.consts[node.input[0]]).reshape(-1)[0])
    at = attrs_of(onnx, node)
    branch = at["then_branch" if cond else "else_branch"]
    prefix = (node.name or node.output[0]) + ("/then/" if cond else "/else/")
    own = {t.name for t in branch.initializer} | {o for n in branch.node for o in n.output if o}
    rename = {n: prefix + n for n in own}
    for t in branch.initializer:
        a.consts[rename[t.name]] = onnx.numpy_helper.to_array(t)
    out = []
    index = a.position.get(id(node))
    for n in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.input[:] = [rename.get(i, i) for i in n.input]
        copy.output[:] = [rename.get(o, o) for o in n.output]
        a.position[id(copy)] = index
        out.append(copy)
    for result, value in zip(node.output, branch.output):
        ident = onnx.helper.make_node("Identity", [rename.get(value.name, value.name)], [result],
                                      name=f"{prefix}out")
        a.position[id(ident)] = index
        out.append(ident)
    return out


def _infer(onnx, node, a: Analysis, cache: dict) -> None:
    """Output shapes of a data-path node from ONNX's shape inference of that node alone."""
    helper = onnx.helper
    key_parts = [node.op_type, node.domain, node.SerializeToString(deterministic=True)]
    inputs, inits = [], []
    for i, name in enumerate(node.input):
        if not name:
            continue
        if name in a.consts:
            v = a.consts[name]
            if v.size <= SMALL:
                inits.append(onnx.numpy_helper.from_array(v, name))
                key_parts.append((i, v.dtype.str, v.shape, v.tobytes()))
                continue
            elem, shape = helper.np_dtype_to_tensor_dtype(v.dtype), v.shape
        else:
            elem, shape = helper.np_dtype_to_tensor_dtype(a.dtypes[name]), a.shapes[name]
        inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        key_parts.append((i, elem, tuple(shape)))
    key = tuple(key_parts)
    if key not in cache:
        outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                   for o in node.output if o]
        graph = helper.make_graph([node], "one", inputs, outputs, inits)
        opsets = [helper.make_opsetid(d if d != "ai.onnx" else "", v)
                  for d, v in a.graph.domains.items()]
        model = helper.make_model(graph, opset_imports=opsets)
        try:
            done = onnx.shape_inference.infer_shapes(model, strict_mode=True)
            cache[key] = [_type_of(onnx, v) for v in done.graph.output]
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
            cache[key] = str(e).strip().splitlines()[-1][:300]
    result = cache[key]
    if isinstance(result, str):
        a.problems.append(a.problem(node, f"ONNX shape inference fails on it: {result}"))
        return
    for name, (elem, shape) in zip([o for o in node.output if o], result):
        if shape is None and name not in a.read:
            continue  # an output nobody reads (Dropout's mask)
        if shape is None:
            a.problems.append(a.problem(node, f"the shape of its output '{name}' cannot be "
                                              "inferred from the input shape"))
            return
        check_size(a, node, name, shape)
        a.shapes[name], a.dtypes[name] = shape, np_dtype(onnx, elem)
    a.nodes.append(node)


def _type_of(onnx, value):
    t = value.type.tensor_type
    if not t.HasField("shape") or any(not d.HasField("dim_value") for d in t.shape.dim):
        return t.elem_type, None
    return t.elem_type, tuple(d.dim_value for d in t.shape.dim)
