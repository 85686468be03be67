"""The importer's activations: single nodes (Relu, Clip, Elu, PRelu, Softmax, LRN, ...) and
activations written out as formulas, recognised by what they compute.

`match(low, node)` is tried first at every node. From a node reading one data value x, it takes
the subgraphs of elementwise nodes whose only data inputs are x and each other's outputs (the
other operands scalar constants) and that have one output leaving them, largest first. It
evaluates each in float64 on PROBE (201 points in [-8, 8]) and compares the result with the
candidates in FORMULAS (gelu's erf and tanh forms, silu's x * sigmoid(x), softplus, relu,
sigmoid, tanh) and `_fitted` (leaky_relu, elu, selu, relu6, hardtanh, whose constants are read
off the probe first). Whatever order and association an exporter writes a formula in, the same
function is recognised; a subgraph that is something else (2 * gelu(x), say) matches nothing
and its nodes are reported one by one.
Softplus with beta and threshold is recognised by its structure: Mul(x, beta), Softplus,
Div(beta), and Where(Greater(beta x, threshold), x, .).
"""

from __future__ import annotations

import math

import numpy as np

from netspec.interop.onnx_layers import HANDLERS
from netspec.interop.onnx_lower import Lowering, name_hint, yaml_float

PROBE = np.linspace(-8.0, 8.0, 201)
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Erf", "Tanh", "Sigmoid", "Exp", "Log",
               "Sqrt", "Neg", "Abs", "Relu", "Reciprocal", "Max", "Min", "Softplus", "Where",
               "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Sum"}
MAX_NODES = 16
_erf = np.vectorize(math.erf, otypes=[np.float64])
FORMULAS = {
    ("gelu", "none"): lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    ("gelu", "tanh"): lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi)
                                                       * (x + 0.044715 * x**3))),
    ("silu", None): lambda x: x / (1 + np.exp(-x)),
    ("softplus", None): lambda x: np.logaddexp(x, 0),
    ("relu", None): lambda x: np.maximum(x, 0),
    ("sigmoid", None): lambda x: 1 / (1 + np.exp(-x)),
    ("tanh", None): np.tanh,
}


def _fitted(got) -> dict | None:
    """leaky_relu, elu, selu, relu6 or hardtanh fields whose curve is `got` on PROBE (their
    constants read off it)."""
    x, pos = PROBE, PROBE > 0
    lo, hi = float(got.min()), float(got.max())
    if x[0] < lo < hi < x[-1] and np.allclose(got, np.clip(x, lo, hi), rtol=1e-6, atol=1e-7):
        if (lo, hi) == (0.0, 6.0):
            return {"type": "relu6"}
        return {"type": "hardtanh"} | ({"min_val": float(np.float32(lo))} if lo != -1 else {}) \
            | ({"max_val": float(np.float32(hi))} if hi != 1 else {})
    if not np.allclose(got[pos], got[pos][-1] / x[pos][-1] * x[pos], rtol=1e-6, atol=1e-7):
        return None
    scale = got[pos][-1] / x[pos][-1]  # the slope for x > 0
    slope = got[0] / x[0]
    if np.isclose(scale, 1) and np.allclose(got, np.where(pos, x, slope * x), rtol=1e-6,
                                             atol=1e-7):
        return {"type": "leaky_relu", "negative_slope": float(np.float32(slope))}
    alpha = got[0] / (scale * np.expm1(x[0]))
    if not np.allclose(got, scale * np.where(pos, x, alpha * np.expm1(x)), rtol=1e-6,
                       atol=1e-7):
        return None
    from netspec.nn.layers.selu import ALPHA, SCALE

    if np.isclose(scale, SCALE, rtol=1e-6) and np.isclose(alpha, ALPHA, rtol=1e-6):
        return {"type": "selu"}
    if np.isclose(scale, 1):
        return {"type": "elu"} | ({"alpha": float(np.float32(alpha))}
                                  if not np.isclose(alpha, 1) else {})
    return None
OPS = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
       "Pow": np.power, "Erf": _erf, "Tanh": np.tanh, "Sigmoid": lambda v: 1 / (1 + np.exp(-v)),
       "Exp": np.exp, "Log": np.log, "Sqrt": np.sqrt, "Neg": np.negative, "Abs": np.abs,
       "Relu": lambda v: np.maximum(v, 0), "Reciprocal": np.reciprocal, "Max": np.maximum,
       "Min": np.minimum, "Softplus": lambda v: np.logaddexp(v, 0), "Where": np.where,
       "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
       "GreaterOrEqual": np.greater_equal, "Sum": lambda *v: sum(v[1:], v[0])}


def match(low: Lowering, node) -> bool:
    """Emit the activation that `node` and the elementwise nodes after it compute, if any."""
    if node.op_type not in ELEMENTWISE:
        return False
    data = {i for i in node.input if i and i in low.a.shapes}
    if len(data) != 1 or not _scalars(low, node, data):
        return False
    (x,) = data
    single = node.op_type in HANDLERS  # a lone Tanh is its own handler's; a lone Max is ours
    for part, out in _regions(low, node, x):
        if len(part) == 1 and single:
            continue
        with np.errstate(all="ignore"):
            got = _evaluate(low, part, x)
        if got is None:
            continue
        fields = None
        for (kind, form), f in FORMULAS.items():
            if np.allclose(got, f(PROBE), rtol=1e-6, atol=1e-7):
                fields = {"type": kind} | ({"approximate": form} if form == "tanh" else {})
                break
        fields = fields or _fitted(got)
        if fields is not None:
            low.emit(fields, [x], out, part, name_hint(node))
            return True
    return False


def _scalars(low: Lowering, node, data: set) -> bool:
    """Every operand of `node` that is not data is a scalar constant."""
    for i in node.input:
        if i and i not in data:
            c = low.const(i)
            if c is None or c.size != 1:
                return False
    return True


def _regions(low: Lowering, first, x: str):
    """(nodes, output) for each subgraph that starts at `first`, reads only x and scalar
    constants, and has one output leaving it: the elementwise ancestors of each candidate
    output node among x's elementwise descendants, largest first."""
    order = {id(n): i for i, n in enumerate(low.a.nodes)}
    start = order[id(first)]
    pool, frontier = {}, [x]
    while frontier and len(pool) < MAX_NODES:
        v = frontier.pop(0)
        for r in low.readers.get(v, []):
            if (id(r) in pool or id(r) in low.done or r.op_type not in ELEMENTWISE
                    or order[id(r)] < start):
                continue
            pool[id(r)] = r
            frontier += [o for o in r.output if o]
    producer = {o: n for n in pool.values() for o in n.output if o}
    for out_node in sorted(pool.values(), key=lambda n: -order[id(n)]):
        part, stack = {}, [out_node]
        while stack:
            n = stack.pop()
            if id(n) in part:
                continue
            part[id(n)] = n
            stack += [producer[i] for i in n.input if i in producer]
        nodes = sorted(part.values(), key=lambda n: order[id(n)])
        if nodes[0] is not first or not _closed(low, nodes, x, out_node.output[0]):
            continue
        yield nodes, out_node.output[0]


def _closed(low: Lowering, nodes, x: str, out: str) -> bool:
    """Each node reads x, the others' outputs and scalar constants; only `out` leaves."""
    inside = {id(n) for n in nodes}
    values = {x} | {o for n in nodes for o in n.output}
    for n in nodes:
        data = {i for i in n.input if i and i in low.a.shapes}
        if not data <= values or not _scalars(low, n, data):
            return False
        for o in n.output:
            if o != out and (o in low.outputs or any(id(r) not in inside
                                                     for r in low.readers.get(o, []))):
                return False
    return True


def _evaluate(low: Lowering, part, x: str):
    vals = {x: PROBE}
    for n in part:
        args = [vals[i] if i in vals else low.const(i).reshape(-1)[0].astype(np.float64)
                for i in n.input if i]
        vals[n.output[0]] = OPS[n.op_type](*args)
    out = np.asarray(vals[part[-1].output[0]], dtype=np.float64)
    return out if out.shape == PROBE.shape else None


# ------------------------------------------------------------------ single nodes


def simple(kind: str, **defaults):
    def handle(low: Lowering, node) -> None:
        low.emit({"type": kind, **defaults}, [node.input[0]], node.output[0], [node],
                 name_hint(node))
    return handle


def leaky_relu(low: Lowering, node) -> None:
    alpha = yaml_float(low.attrs(node).get("alpha", 0.01))
    fields = {"type": "leaky_relu"} | ({"negative_slope": alpha} if alpha != 0.01 else {})
    low.emit(fields, [node.input[0]], node.output[0], [node], name_hint(node))


def elu(low: Lowering, node) -> None:
    alpha = yaml_float(low.attrs(node).get("alpha", 1.0))
    low.emit({"type": "elu"} | ({"alpha": alpha} if alpha != 1.0 else {}), [node.input[0]],
             node.output[0], [node], name_hint(node))


def selu(low: Lowering, node) -> None:
    at = low.attrs(node)
    from netspec.nn.layers.selu import ALPHA, SCALE

    if not (np.isclose(at.get("alpha", ALPHA), ALPHA, rtol=1e-6)
            and np.isclose(at.get("gamma", SCALE), SCALE, rtol=1e-6)):
        return low.unsupported(node, f"alpha {at.get('alpha')} and gamma {at.get('gamma')}",
                               "selu (its standard constants only)")
    low.emit({"type": "selu"}, [node.input[0]], node.output[0], [node], name_hint(node))


def clip(low: Lowering, node) -> None:
    at = low.attrs(node)
    if low.opset < 11:
        lo, hi = at.get("min", -np.inf), at.get("max", np.inf)
    else:
        lo, hi = (float(low.const(node.input[i])) if len(node.input) > i and node.input[i]
                  and low.const(node.input[i]) is not None else d
                  for i, d in ((1, -np.inf), (2, np.inf)))
    x, out = node.input[0], node.output[0]
    if (lo, hi) == (0.0, 6.0):
        return low.emit({"type": "relu6"}, [x], out, [node], name_hint(node))
    if lo == 0.0 and hi == np.inf:
        return low.emit({"type": "relu"}, [x], out, [node], name_hint(node))
    if np.isfinite(lo) and np.isfinite(hi) and lo < hi:
        fields = {"type": "hardtanh"} | ({"min_val": yaml_float(lo)} if lo != -1 else {}) | (
            {"max_val": yaml_float(hi)} if hi != 1 else {})
        return low.emit(fields, [x], out, [node], name_hint(node))
    low.unsupported(node, f"Clip to [{lo}, {hi}]", "relu, relu6 or hardtanh (both bounds)")


def prelu(low: Lowering, node) -> None:
    x, slope = node.input[0], low.const(node.input[1])
    shape = low.shape(x)
    if slope is None:
        return low.unsupported(node, "its slope is not constant", "prelu")
    if low.a.graph.converted_from and slope.ndim == 1 and slope.size == shape[0]:
        slope = slope.reshape(-1, *([1] * (len(shape) - 1)))  # PRelu-6: a slope per channel
    vec = low.per_channel(slope, shape) if slope.size > 1 else None
    if slope.size > 1 and vec is None:
        return low.unsupported(node, f"a slope of shape {list(slope.shape)}",
                               "prelu (one slope, or one per channel)")
    fields = {"type": "prelu"} | ({"per_channel": True} if slope.size > 1 else {})
    low.emit(fields, [x], node.output[0], [node], name_hint(node),
             {"weight": vec if vec is not None else slope.reshape(1)})


def softmax(low: Lowering, node) -> None:
    x = node.input[0]
    full = low.a.shapes[x]
    axis = low.attrs(node).get("axis", 1 if low.opset < 13 else -1) % len(full)
    per_channel = axis == 1 and (low.opset >= 13 or len(full) == 2
                                 or all(d == 1 for d in full[2:]))
    if len(full) not in (2, 4) or not per_channel:
        return low.unsupported(node, f"{node.op_type} over axis {axis} of {list(full)}",
                               f"{node.op_type.lower()} (over channels or features)")
    kind = "softmax" if node.op_type == "Softmax" else "log_softmax"
    low.emit({"type": kind}, [x], node.output[0], [node], name_hint(node))


def lrn(low: Lowering, node) -> None:
    at = low.attrs(node)
    size = at["size"]
    if size % 2 == 0:
        return low.unsupported(node, f"LRN of even size {size}",
                               "lrn (odd sizes; onnxruntime refuses even ones too)")
    fields = {"type": "lrn", "size": int(size)}
    for key, onnx_key, default in (("alpha", "alpha", 1e-4), ("beta", "beta", 0.75),
                                   ("k", "bias", 1.0)):
        v = yaml_float(at.get(onnx_key, default))
        if v != default:
            fields[key] = v
    low.emit(fields, [node.input[0]], node.output[0], [node], name_hint(node))


def gelu(low: Lowering, node) -> None:
    form = low.attrs(node).get("approximate", b"none")
    form = form.decode() if isinstance(form, bytes) else form
    low.emit({"type": "gelu"} | ({"approximate": "tanh"} if form == "tanh" else {}),
             [node.input[0]], node.output[0], [node], name_hint(node))


def softplus(low: Lowering, node) -> None:
    """Softplus, with the Mul(x, beta) before and Div(beta) after it, and the threshold's
    Where(Greater(beta x, t), x, .) (how netspec writes beta and threshold)."""
    nodes, src, beta = [node], node.input[0], 1.0
    mul = low.producer.get(src)
    if mul is not None and mul.op_type == "Mul" and id(mul) not in low.done:
        data = [i for i in mul.input if i in low.a.shapes]
        consts = [low.const(i) for i in mul.input if i not in low.a.shapes]
        readers = low.readers.get(src, [])
        if (len(data) == 1 and len(consts) == 1 and consts[0] is not None
                and consts[0].size == 1 and all(r is node or r.op_type == "Greater"
                                                for r in readers)):
            beta, src = float(consts[0].reshape(-1)[0]), data[0]
    out = node.output[0]
    if beta != 1.0:
        div = low.only_reader(out)
        c = low.const(div.input[1]) if div is not None and div.op_type == "Div" else None
        if c is None or c.size != 1 or not np.isclose(float(c.reshape(-1)[0]), beta):
            return low.unsupported(node, "Softplus of a scaled input without the matching Div",
                                   "softplus (beta)")
        nodes += [mul, div]
        out = div.output[0]
    fields = {"type": "softplus"} | ({"beta": yaml_float(beta)} if beta != 1.0 else {})
    where = low.only_reader(out)
    if where is not None and where.op_type == "Where" and where.input[2] == out \
            and where.input[1] == src:
        greater = low.producer.get(where.input[0])
        t = low.const(greater.input[1]) if greater is not None and greater.op_type == \
            "Greater" else None
        scaled = node.input[0]
        if t is not None and t.size == 1 and greater.input[0] == scaled:
            fields["threshold"] = yaml_float(float(t.reshape(-1)[0]))
            nodes += [greater, where]
            out = where.output[0]
    low.emit(fields, [src], out, nodes, name_hint(node))


HANDLERS.update({
    "Relu": simple("relu"), "Sigmoid": simple("sigmoid"), "Tanh": simple("tanh"),
    "LeakyRelu": leaky_relu, "Elu": elu, "Selu": selu, "Clip": clip, "PRelu": prelu,
    "Softmax": softmax, "LogSoftmax": softmax, "LRN": lrn, "Gelu": gelu, "Softplus": softplus,
})
