"""Constant folding for the importer: each operator in FOLD evaluated with NumPy on constant
inputs, every result size checked (check_size) before anything of that size is allocated.

    outs = evaluate(onnx, node, analysis)     # the node's outputs (analysis.consts holds inputs)

Shape and Size read a data value's static shape; ConstantOfShape broadcasts its value without
allocating; an If is inlined by onnx_fold, not evaluated here.
"""

from __future__ import annotations

import math

import numpy as np

from netspec.errors import ModelError, Problem
from netspec.interop.onnx_read import MAX_TENSOR_ELEMENTS

# `a` below is the onnx_fold.Analysis being built: consts, shapes, dtypes, problem().

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


def attrs_of(onnx, node) -> dict:
    return {at.name: onnx.helper.get_attribute_value(at) for at in node.attribute}


def check_size(a, node, name, shape) -> None:
    n = math.prod(shape)
    if n > MAX_TENSOR_ELEMENTS:
        what = f"'{name}' would have shape {list(shape)}: {n:,} values ({4 * n / 2**30:,.1f} " \
               f"GiB as float32), more than netspec allocates for one tensor"
        a.problems.append(a.problem(node, what) if node is not None else
                          Problem(what, file=a.graph.where))
        raise ModelError(a.problems)


def np_dtype(onnx, elem_type):
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return np.dtype(np.float32)


def evaluate(onnx, node, a) -> list:
    """The outputs of a constant node, computed with NumPy (sizes checked first)."""
    op, at = node.op_type, attrs_of(onnx, node)
    opset = a.graph.opset
    ins = [a.consts.get(n) if n else None for n in node.input]
    if op == "Constant":
        return [constant_of(onnx, at)]
    if op in ("Shape", "Size"):
        shape = a.shapes.get(node.input[0])
        shape = shape if shape is not None else a.consts[node.input[0]].shape
        if op == "Size":
            return [np.array(math.prod(shape), np.int64)]
        start, end = at.get("start", 0), at.get("end", len(shape))
        return [np.array(shape[start:end], np.int64)]
    if op == "ConstantOfShape":
        dims = [int(d) for d in ins[0].reshape(-1)]
        check_result(a, node, dims)
        value = (onnx.numpy_helper.to_array(at["value"]).reshape(-1)[0] if "value" in at
                 else np.float32(0))
        return [np.broadcast_to(np.asarray(value), dims)]  # read-only, allocates nothing
    if op in BINARY:
        check_result(a, node, np.broadcast_shapes(ins[0].shape, ins[1].shape))
        return [BINARY[op](ins[0], ins[1]).astype(np.result_type(ins[0], ins[1])
                                                  if op not in ("Equal", "Less", "Greater",
                                                                "LessOrEqual", "GreaterOrEqual",
                                                                "And", "Or") else bool)]
    if op == "Div":
        check_result(a, node, np.broadcast_shapes(ins[0].shape, ins[1].shape))
        x, y = ins
        if x.dtype.kind in "iu":  # integer division truncates, as ONNX
            return [np.trunc(x / y).astype(x.dtype)]
        return [(x / y).astype(x.dtype)]
    if op in UNARY:
        return [UNARY[op](ins[0])]
    if op == "Dropout":
        return [ins[0]] + ([np.ones(ins[0].shape, bool)] if len(node.output) > 1 else [])
    if op == "Cast":
        return [ins[0].astype(np_dtype(onnx, at["to"]))]
    if op == "CastLike":
        like = a.dtypes.get(node.input[1]) or a.consts[node.input[1]].dtype
        return [ins[0].astype(like)]
    if op == "Gather":
        axis = at.get("axis", 0)
        idx = ins[1]
        rest = math.prod(ins[0].shape) // max(ins[0].shape[axis], 1)
        check_result(a, node, (idx.size * rest,))
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
        check_result(a, node, (sum(p.size for p in parts),))
        return [np.concatenate(parts, axis=at["axis"])]
    if op == "Slice":
        return [slice_of(ins, at, opset)]
    if op == "Reshape":
        return [ins[0].reshape(reshape_target(ins[0].shape, ins[1], at.get("allowzero", 0)))]
    if op == "Transpose":
        return [np.transpose(ins[0], at.get("perm"))]
    if op == "Flatten":
        axis = at.get("axis", 1) % max(ins[0].ndim, 1)
        return [ins[0].reshape(math.prod(ins[0].shape[:axis]), -1)]
    if op == "Where":
        check_result(a, node, np.broadcast_shapes(*(v.shape for v in ins)))
        return [np.where(*ins)]
    if op == "Range":
        start, limit, delta = (v.item() for v in ins)
        count = max(math.ceil((limit - start) / delta), 0) if delta else 0
        check_result(a, node, (count,))
        return [np.arange(start, limit, delta, dtype=ins[0].dtype)]
    if op == "Expand":
        target = np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in ins[1]))
        check_result(a, node, target)
        return [np.broadcast_to(ins[0], target).copy()]
    if op == "Tile":
        reps = [int(r) for r in ins[1]]
        check_result(a, node, [d * r for d, r in zip(ins[0].shape, reps)])
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


def constant_of(onnx, at) -> np.ndarray:
    if "value" in at:
        return onnx.numpy_helper.to_array(at["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in at:
            return np.array(at[key], dtype)
    raise ValueError("a Constant without a numeric value (sparse or string) is not supported")


def check_result(a, node, shape) -> None:
    if any(int(d) < 0 for d in shape):
        raise ValueError(f"negative dims {list(shape)}")
    check_size(a, node, node.output[0], tuple(int(d) for d in shape))


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


def slice_of(ins, at, opset) -> np.ndarray:
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
