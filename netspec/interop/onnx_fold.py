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

import math
from dataclasses import dataclass, field

import numpy as np

from netspec.errors import ModelError, Problem
from netspec.interop.onnx_read import MAX_TENSOR_ELEMENTS, Graph, import_onnx

# Operators evaluated when every input is a constant.
FOLD = {"Identity", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Add", "Sub", "Mul",
        "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater", "LessOrEqual",
        "GreaterOrEqual", "And", "Or", "Not", "Neg", "Abs", "Sqrt", "Floor", "Ceil",
        "Reciprocal", "Exp", "Log", "Cast", "Reshape", "Transpose", "Flatten", "Where",
        "Range", "Expand", "Tile", "Split", "ReduceProd", "ReduceSum", "ReduceMax",
        "ReduceMin", "Dropout", "ConstantOfShape", "Shape", "Size", "CastLike"}
KEEPS_NAME = {"Reshape", "Transpose", "Cast", "Identity", "Squeeze", "Unsqueeze", "Flatten"}
SMALL = 64  # constant inputs up to this many values are given to shape inference as values
BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Pow": np.power,
          "Max": np.maximum, "Min": np.minimum, "Equal": np.equal, "Less": np.less,
          "Greater": np.greater, "LessOrEqual": np.less_equal,
          "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or}
UNARY = {"Neg": np.negative, "Abs": np.abs, "Sqrt": np.sqrt, "Floor": np.floor,
         "Ceil": np.ceil, "Reciprocal": np.reciprocal, "Exp": np.exp, "Log": np.log,
         "Not": np.logical_not, "Identity": lambda v: v}


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
    a.dtypes[inp.name] = _np_dtype(onnx, inp.type.tensor_type.elem_type)
    for name, t in graph.initializers.items():
        a.consts[name] = nh.to_array(t)
    _check_size(a, None, inp.name, shape)
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
                outs = _evaluate(onnx, node, a)
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


def _check_size(a: Analysis, node, name, shape) -> None:
    n = math.prod(shape)
    if n > MAX_TENSOR_ELEMENTS:
        what = f"'{name}' would have shape {list(shape)}: {n:,} values ({4 * n / 2**30:,.1f} " \
               f"GiB as float32), more than netspec allocates for one tensor"
        a.problems.append(a.problem(node, what) if node is not None else
                          Problem(what, file=a.graph.where))
        raise ModelError(a.problems)


def _np_dtype(onnx, elem_type):
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return np.dtype(np.float32)


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


def attrs_of(onnx, node) -> dict:
    return {at.name: onnx.helper.get_attribute_value(at) for at in node.attribute}


def _evaluate(onnx, node, a: Analysis) -> list:
    """The outputs of a constant node, computed with NumPy (sizes checked first)."""
    op, at = node.op_type, attrs_of(onnx, node)
    opset = a.graph.opset
    ins = [a.consts.get(n) if n else None for n in node.input]
    if op == "Constant":
        return [_constant(onnx, at)]
    if op in ("Shape", "Size"):
        shape = a.shapes.get(node.input[0])
        shape = shape if shape is not None else a.consts[node.input[0]].shape
        if op == "Size":
            return [np.array(math.prod(shape), np.int64)]
        start, end = at.get("start", 0), at.get("end", len(shape))
        return [np.array(shape[start:end], np.int64)]
    if op == "ConstantOfShape":
        dims = [int(d) for d in ins[0].reshape(-1)]
        _check_result(a, node, dims)
        value = (onnx.numpy_helper.to_array(at["value"]).reshape(-1)[0] if "value" in at
                 else np.float32(0))
        return [np.broadcast_to(np.asarray(value), dims)]  # read-only, allocates nothing
    if op in BINARY:
        _check_result(a, node, np.broadcast_shapes(ins[0].shape, ins[1].shape))
        return [BINARY[op](ins[0], ins[1]).astype(np.result_type(ins[0], ins[1])
                                                  if op not in ("Equal", "Less", "Greater",
                                                                "LessOrEqual", "GreaterOrEqual",
                                                                "And", "Or") else bool)]
    if op == "Div":
        _check_result(a, node, np.broadcast_shapes(ins[0].shape, ins[1].shape))
        x, y = ins
        if x.dtype.kind in "iu":  # integer division truncates, as ONNX
            return [np.trunc(x / y).astype(x.dtype)]
        return [(x / y).astype(x.dtype)]
    if op in UNARY:
        return [UNARY[op](ins[0])]
    if op == "Dropout":
        return [ins[0]] + ([np.ones(ins[0].shape, bool)] if len(node.output) > 1 else [])
    if op == "Cast":
        return [ins[0].astype(_np_dtype(onnx, at["to"]))]
    if op == "CastLike":
        like = a.dtypes.get(node.input[1]) or a.consts[node.input[1]].dtype
        return [ins[0].astype(like)]
    if op == "Gather":
        axis = at.get("axis", 0)
        idx = ins[1]
        rest = math.prod(ins[0].shape) // max(ins[0].shape[axis], 1)
        _check_result(a, node, (idx.size * rest,))
        return [np.take(ins[0], idx, axis=axis)]
    if op in ("Unsqueeze", "Squeeze"):
        axes = at.get("axes") if opset < 13 else (
            [int(v) for v in ins[1].reshape(-1)] if len(ins) > 1 and ins[1] is not None else None)
        if op == "Squeeze":
            return [np.squeeze(ins[0], axis=tuple(axes) if axes is not None else None)]
        out = ins[0]
        rank = out.ndim + len(axes)
        for ax in sorted(ax % rank for ax in axes):
            out = np.expand_dims(out, ax)
        return [out]
    if op == "Concat":
        parts = [v for v in ins if v is not None]
        _check_result(a, node, (sum(p.size for p in parts),))
        return [np.concatenate(parts, axis=at["axis"])]
    if op == "Slice":
        return [_slice(ins, at, opset)]
    if op == "Reshape":
        return [ins[0].reshape(reshape_target(ins[0].shape, ins[1], at.get("allowzero", 0)))]
    if op == "Transpose":
        return [np.transpose(ins[0], at.get("perm"))]
    if op == "Flatten":
        axis = at.get("axis", 1) % max(ins[0].ndim, 1)
        return [ins[0].reshape(math.prod(ins[0].shape[:axis]), -1)]
    if op == "Where":
        _check_result(a, node, np.broadcast_shapes(*(v.shape for v in ins)))
        return [np.where(*ins)]
    if op == "Range":
        start, limit, delta = (v.item() for v in ins)
        count = max(math.ceil((limit - start) / delta), 0) if delta else 0
        _check_result(a, node, (count,))
        return [np.arange(start, limit, delta, dtype=ins[0].dtype)]
    if op == "Expand":
        target = np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in ins[1]))
        _check_result(a, node, target)
        return [np.broadcast_to(ins[0], target).copy()]
    if op == "Tile":
        reps = [int(r) for r in ins[1]]
        _check_result(a, node, [d * r for d, r in zip(ins[0].shape, reps)])
        return [np.tile(ins[0], reps)]
    if op == "Split":
        axis = at.get("axis", 0)
        sizes = at.get("split") if opset < 13 else (
            [int(v) for v in ins[1]] if len(ins) > 1 and ins[1] is not None else None)
        n = ins[0].shape[axis]
        if sizes is None:
            k = len(node.output)
            sizes = [-(-n // k)] * (k - 1) + [n - -(-n // k) * (k - 1)]
        return np.split(ins[0], np.cumsum(sizes)[:-1], axis=axis)
    if op.startswith("Reduce"):
        axes = at.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = [int(v) for v in ins[1]]
        fn = {"ReduceProd": np.prod, "ReduceSum": np.sum, "ReduceMax": np.max,
              "ReduceMin": np.min}[op]
        return [fn(ins[0], axis=tuple(axes) if axes else None,
                   keepdims=bool(at.get("keepdims", 1)))]
    raise ValueError(f"{op} is not folded")


def _constant(onnx, at) -> np.ndarray:
    if "value" in at:
        return onnx.numpy_helper.to_array(at["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in at:
            return np.array(at[key], dtype)
    raise ValueError("a Constant without a numeric value (sparse or string) is not supported")


def _check_result(a: Analysis, node, shape) -> None:
    if any(int(d) < 0 for d in shape):
        raise ValueError(f"negative dims {list(shape)}")
    _check_size(a, node, node.output[0], tuple(int(d) for d in shape))


def reshape_target(shape, target, allowzero=0) -> tuple:
    """ONNX Reshape's output shape: 0 copies the input's dim (unless allowzero), -1 is
    inferred; ValueError when the sizes do not match."""
    dims = [int(d) for d in np.asarray(target).reshape(-1)]
    if not allowzero:
        dims = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(dims)]
    total = math.prod(shape)
    if dims.count(-1) == 1:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or total % known:
            raise ValueError(f"cannot reshape {list(shape)} to {dims}")
        dims[dims.index(-1)] = total // known
    if math.prod(dims) != total or any(d < 0 for d in dims):
        raise ValueError(f"cannot reshape {list(shape)} to {dims}")
    return tuple(dims)


def _slice(ins, at, opset) -> np.ndarray:
    x = ins[0]
    if opset < 10:
        starts, ends = at["starts"], at["ends"]
        axes, steps = at.get("axes", list(range(len(starts)))), [1] * len(starts)
    else:
        starts, ends = [int(v) for v in ins[1]], [int(v) for v in ins[2]]
        axes = ([int(v) for v in ins[3]] if len(ins) > 3 and ins[3] is not None
                else list(range(len(starts))))
        steps = [int(v) for v in ins[4]] if len(ins) > 4 and ins[4] is not None else [1] * len(
            starts)
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[ax % x.ndim] = slice(*slice_bounds(s, e, st, x.shape[ax % x.ndim]))
    return x[tuple(index)]


def slice_bounds(start: int, end: int, step: int, n: int) -> tuple[int, int | None, int]:
    """ONNX Slice's (start, end, step) clamped to a dim of size n, as Python slice arguments."""
    if start < 0:
        start += n
    if end < 0:
        end += n
    if step > 0:
        return min(max(start, 0), n), min(max(end, 0), n), step
    start = min(max(start, -1), n - 1)
    end = min(max(end, -1), n - 1)
    return start, (None if end < 0 else end), step


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
        _check_size(a, node, name, shape)
        a.shapes[name], a.dtypes[name] = shape, _np_dtype(onnx, elem)
    a.nodes.append(node)


def _type_of(onnx, value):
    t = value.type.tensor_type
    if not t.HasField("shape") or any(not d.HasField("dim_value") for d in t.shape.dim):
        return t.elem_type, None
    return t.elem_type, tuple(d.dim_value for d in t.shape.dim)
