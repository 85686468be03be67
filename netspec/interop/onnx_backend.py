"""netspec as an ONNX backend (onnx.backend.base.Backend): prepare by import, run by the plan.

    import netspec.onnx_backend as backend
    rep = backend.prepare(model)          # the model imported as a spec and compiled to a plan
    (y,) = rep.run([x])                   # the plan's eval-mode forward, in the model's layout

This is how onnx's own `BackendTest` runs against netspec (tests/test_onnx_backend.py), and how
any tool written for an ONNX backend can call it. What the backend adds to `import_model`:
  * Graph inputs after the first are bound as constants when `run` gets their values: node
    tests pass a Conv's weights or a BatchNormalization's statistics as inputs. The model is
    imported again for each new set of such values (a netspec network has one input).
  * A model whose sample is neither (C, H, W) nor (D,) runs on a 2-D view of its input when
    every node is elementwise ((N, ...) as (N, D)), or elementwise and a softmax over the last
    axis ((..., K) as (M, K)); the outputs get the model's shapes back.
  * The plan computes in float32, or in float64 with prepare(model, dtype="float64"); outputs
    are cast to the model's declared output type. (The light SqueezeNet needs float64: its
    constant weights drive the activations to ~1e10, where its final softmax turns float32
    rounding that differs between rows of a GEMM into visibly different probabilities.)
"""

from __future__ import annotations

import math

import numpy as np

from netspec.errors import ModelError, Problem
from netspec.interop.onnx_import import import_model, state_of
from netspec.interop.onnx_read import import_onnx

ELEMENTWISE = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Softplus", "Clip",
               "Gelu", "Erf", "Add", "Sub", "Mul", "Div", "Pow", "Identity", "Dropout", "Neg",
               "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Constant", "Max", "Min", "PRelu",
               "Where", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Cast", "CastLike",
               "Sum"}
LAST_AXIS = {"Softmax", "LogSoftmax"}


def _base():
    onnx = import_onnx()
    from onnx.backend.base import Backend, BackendRep

    return onnx, Backend, BackendRep


onnx, Backend, BackendRep = _base()


class NetspecRep(BackendRep):
    """A prepared model: the plan for its first input, re-imported when bound inputs change."""

    def __init__(self, model, dtype="float32"):
        self.model, self.dtype = model, np.dtype(dtype)
        inits = {t.name for t in model.graph.initializer}
        self.inputs = [v for v in model.graph.input if v.name not in inits]
        if not self.inputs:
            raise ModelError([Problem("the model has no input")])
        self.view = _view(model, self.inputs[0])
        self._key, self._plan, self._imported = None, None, None
        if len(self.inputs) == 1:
            self._build([])

    def _build(self, bound: list) -> None:
        from netspec.plan.compiler import compile

        model = _bind(self.model, self.inputs[1:], bound) if bound else self.model
        shape = self.view[1] if self.view else None
        if shape is not None:
            model = _with_input_shape(model, self.inputs[0].name, shape)
        imported = import_model(model)
        plan = compile(imported.spec, self.dtype, state=state_of(imported))
        self._plan, self._imported = plan, imported

    def run(self, inputs, **kwargs):
        inputs = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
        if len(inputs) != len(self.inputs):
            raise ModelError(f"the model takes {len(self.inputs)} inputs, got {len(inputs)}")
        bound = [np.asarray(v) for v in inputs[1:]]
        key = tuple((v.dtype.str, v.shape, v.tobytes()) for v in bound)
        if self._plan is None or key != self._key:
            self._build(bound)
            self._key = key
        x = np.asarray(inputs[0])
        view = self.view
        if view is not None:
            x = x.reshape(view[0])
        y = self._plan.forward(x, train=False)
        out = self.model.graph.output[0]
        dtype = _np_dtype(out.type.tensor_type.elem_type, x.dtype)
        full = _out_shape(out, len(y), self._imported.output_shape, view, inputs[0])
        return (y.reshape(full).astype(dtype),)


class NetspecBackend(Backend):
    """onnx.backend.base.Backend for netspec (CPU only)."""

    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs) -> bool:
        """True on the CPU: whether netspec can import a model is `prepare`'s to say, with the
        reasons (onnx's BackendTest would turn a False here into a silent skip)."""
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs) -> NetspecRep:
        if not cls.supports_device(device):
            raise ModelError(f"netspec runs on the CPU, not {device}")
        return NetspecRep(model, kwargs.get("dtype", "float32"))

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        """One node as a one-node model (its first input is the network's input)."""
        helper = onnx.helper
        ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(
            np.asarray(v).dtype), np.shape(v)) for n, v in zip(node.input, inputs)]
        outs = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None)
                for o in node.output]
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        model = helper.make_model(helper.make_graph([node], "node", ins, outs),
                                  opset_imports=[helper.make_opsetid("", opset)])
        return cls.run_model(model, inputs, device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"


def _np_dtype(elem: int, default):
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    except (KeyError, TypeError, ValueError):
        return default
    return dtype if dtype.kind == "f" else default


def _dims(value) -> list:
    return [d.dim_value if d.HasField("dim_value") else None
            for d in value.type.tensor_type.shape.dim]


def _view(model, inp) -> tuple | None:
    """((full view shape), (per-sample view shape)) for a model whose input netspec takes only
    as a 2-D view (see the module docstring), else None."""
    dims = _dims(inp)
    if not dims or any(d is None for d in dims):
        return None
    rank, total = len(dims), math.prod(dims)
    ops = {n.op_type for n in model.graph.node}
    if ops <= ELEMENTWISE:
        if rank in (2, 4):
            return None
        n = dims[0] if rank > 1 else 1
        return (n, total // n), (total // n,)
    if not ops <= ELEMENTWISE | LAST_AXIS:
        return None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    axes = [next((a.i for a in n.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
            % rank for n in model.graph.node if n.op_type in LAST_AXIS]
    if all(a == rank - 1 for a in axes) and rank != 2:
        return (total // dims[-1], dims[-1]), (dims[-1],)  # softmax over the last axis
    if opset < 13 and all(a == 1 for a in axes) and rank > 2:
        return (dims[0], total // dims[0]), (total // dims[0],)  # before 13: over all but N
    return None


def _with_input_shape(model, name: str, shape) -> object:
    """A copy of `model` whose input `name` is (N, *shape); every other value's declared
    shape is dropped (the importer infers them)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for v in m.graph.input:
        if v.name == name:
            dims = v.type.tensor_type.shape.dim
            batch = "N"
            del dims[:]
            dims.add().dim_param = batch
            for d in shape:
                dims.add().dim_value = int(d)
    for v in m.graph.output:
        v.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    for node in m.graph.node:  # the softmax is over the view's last axis
        if node.op_type in LAST_AXIS:
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("axis", 1))
    return m


def _bind(model, values, arrays) -> object:
    """A copy of `model` whose inputs `values` are initializers holding `arrays`."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = {v.name for v in values}
    kept = [v for v in m.graph.input if v.name not in names]
    del m.graph.input[:]
    m.graph.input.extend(kept)
    for v, a in zip(values, arrays):
        m.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(a), v.name))
    return m


def _out_shape(out, n: int, per_sample, view, x) -> tuple:
    """The model's output shape for a batch of n (or the original layout under a view)."""
    if view is not None:
        return tuple(np.shape(x))
    dims = _dims(out)
    if dims and all(d is not None for d in dims) and math.prod(dims) == n * math.prod(
            per_sample):
        return tuple(dims)
    return (n, *per_sample)


prepare = NetspecBackend.prepare
run_model = NetspecBackend.run_model
run_node = NetspecBackend.run_node
supports_device = NetspecBackend.supports_device
is_compatible = NetspecBackend.is_compatible
