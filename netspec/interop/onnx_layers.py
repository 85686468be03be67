"""The importer's handlers, one per ONNX operator: each turns a node (and the nodes it
recognises around it, see onnx_lower.py) into a netspec layer, or reports why it cannot.

A handler is `handle(low, node)`; it calls low.emit(...) for a layer, low.skip(...) to leave a
node out, or low.unsupported(...). HANDLERS maps op types to handlers.
"""

from __future__ import annotations

import numpy as np

from netspec.interop.onnx_lower import (
    Lowering,
    axis_slice,
    name_hint,
    reshaped,
    spatial_pads,
    weight_hint,
    written_pair,
    yaml_float,
)
from netspec.nn.layers.pooling import written_padding


def conv(low: Lowering, node) -> None:
    x, w = node.input[0], low.const(node.input[1])
    b = low.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if w is None or (len(node.input) > 2 and node.input[2] and b is None):
        return low.unsupported(node, "the weights are not constant", "")
    if w.ndim != 4:
        return low.unsupported(node, f"a {w.ndim - 2}-D convolution", "conv2d (2-D only)")
    at = low.attrs(node)
    kernel = tuple(w.shape[2:])
    strides, dil = tuple(at.get("strides", (1, 1))), tuple(at.get("dilations", (1, 1)))
    groups = at.get("group", 1)
    pads = spatial_pads(low, node, x, kernel, strides, dil)
    x, extra, pad_node = low.padding_before(node, x, lambda src, v: v == 0.0)
    pads = tuple(p + e for p, e in zip(pads, extra))
    fields = {"type": "conv2d", "out_channels": int(w.shape[0]), "kernel_size":
              written_pair(kernel)}
    if strides != (1, 1):
        fields["stride"] = written_pair(strides)
    nodes = [node] + ([pad_node] if pad_node is not None else [])
    if pads != (0, 0, 0, 0):
        fields["padding"] = written_padding(*pads)
    if dil != (1, 1):
        fields["dilation"] = written_pair(dil)
    if groups != 1:
        fields["groups"] = int(groups)
    params = {"weight": w}
    if b is not None:
        params["bias"] = b.reshape(-1)
    else:
        fields["bias"] = False
    layer = low.emit(fields, [x], node.output[0], nodes, weight_hint(low, node, 1), params)
    low.absorb_affine(layer, nodes, ("weight",), "bias")


def batchnorm(low: Lowering, node) -> None:
    x = node.input[0]
    vals = [low.const(n) for n in node.input[1:5]]
    at = low.attrs(node)
    if any(v is None for v in vals):
        return low.unsupported(node, "its scale, bias, mean and variance are not constant", "")
    if at.get("training_mode", 0) or any(o for o in node.output[1:]):
        return low.unsupported(node, "batch normalisation in training mode (extra outputs)",
                               "batchnorm (exported in eval mode)")
    if low.opset < 9 and not at.get("spatial", 1):
        return low.unsupported(node, "spatial=0 (statistics per position)", "batchnorm")
    if len(low.shape(x)) not in (1, 3):
        return low.unsupported(node, f"input {low.shape(x)}", "batchnorm on (C, H, W) or (D,)")
    scale, bias, mean, var = (np.asarray(v, np.float64).reshape(-1) for v in vals)
    fields = {"type": "batchnorm"}
    eps, momentum = float(at.get("epsilon", 1e-5)), 1.0 - float(at.get("momentum", 0.9))
    if not np.isclose(eps, 1e-5, rtol=1e-6, atol=0):
        fields["eps"] = yaml_float(eps)
    if not np.isclose(momentum, 0.1) and 0 <= momentum <= 1:
        fields["momentum"] = yaml_float(momentum)
    nodes = [node]
    layer = low.emit(fields, [x], node.output[0], nodes, weight_hint(low, node, 1),
                     {"weight": scale, "bias": bias, "running_mean": mean, "running_var": var})
    low.absorb_affine(layer, nodes, ("weight",), "bias")


def gemm(low: Lowering, node) -> None:
    at = low.attrs(node)
    x, w = node.input[0], low.const(node.input[1])
    c = low.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if w is None or x not in low.a.shapes or (len(node.input) > 2 and node.input[2] and c is None):
        return low.unsupported(node, "a product of two computed tensors", "linear (Gemm by "
                               "constant weights)")
    if at.get("transA", 0) or len(low.shape(x)) != 1:
        return low.unsupported(node, "the data operand is transposed or not (N, D)", "")
    weight = (w if at.get("transB", 0) else w.T) * at.get("alpha", 1.0)
    out = weight.shape[0]
    params = {"weight": weight}
    fields = {"type": "linear", "out_features": int(out)}
    if c is not None:
        if c.size not in (1, out) or (np.ndim(c) == 2 and c.shape[0] != 1):
            return low.unsupported(node, f"a bias of shape {list(c.shape)} (one per sample)",
                                   "linear (a bias of one value per output)")
        params["bias"] = np.broadcast_to(
            np.asarray(c, np.float64).reshape(-1) * at.get("beta", 1.0), (out,))
    else:
        fields["bias"] = False
    nodes = [node]
    layer = low.emit(fields, [x], node.output[0], nodes, weight_hint(low, node, 1), params)
    low.absorb_affine(layer, nodes, ("weight",), "bias")


def matmul(low: Lowering, node) -> None:
    x, w = node.input[0], low.const(node.input[1])
    if w is None or x not in low.a.shapes or w.ndim != 2 or len(low.shape(x)) != 1:
        return low.unsupported(node, "not an (N, D) input times a constant matrix",
                               "linear (MatMul by a constant (D, out) matrix)")
    nodes = [node]
    layer = low.emit({"type": "linear", "out_features": int(w.shape[1]), "bias": False}, [x],
                     node.output[0], nodes, weight_hint(low, node, 1), {"weight": w.T})
    low.absorb_affine(layer, nodes, ("weight",), "bias")


def pool(low: Lowering, node) -> None:
    x = node.input[0]
    at = low.attrs(node)
    kernel = tuple(at.get("kernel_shape", ()))
    if len(kernel) != 2 or len(low.shape(x)) != 3:
        return low.unsupported(node, f"a {len(kernel)}-D pool", "maxpool2d / avgpool2d (2-D)")
    if len(node.output) > 1 and node.output[1]:
        return low.unsupported(node, "it also returns the indices of the maxima", "maxpool2d")
    is_max = node.op_type == "MaxPool"
    strides, dil = tuple(at.get("strides", (1, 1))), tuple(at.get("dilations", (1, 1)))
    if not is_max and dil != (1, 1):
        return low.unsupported(node, "a dilated average pool", "avgpool2d (no dilation)")
    pads = spatial_pads(low, node, x, kernel, strides, dil)
    include = bool(at.get("count_include_pad", 0))
    if is_max:
        def ok(src, v):
            return v == -np.inf or (v == 0.0 and low.non_negative(src))
    else:
        def ok(src, v):
            return v == 0.0 and (include or pads == (0, 0, 0, 0))
    x2, extra, pad_node = low.padding_before(node, x, ok)
    merged = tuple(p + e for p, e in zip(pads, extra))
    eh, ew = (d * (k - 1) + 1 for d, k in zip(dil, kernel))
    if pad_node is not None and (max(merged[:2]) >= eh or max(merged[2:]) >= ew):
        pad_node = None  # too much padding for the pool: keep the Pad as a layer
    if pad_node is not None:
        x, pads = x2, merged
        include = include or extra != (0, 0, 0, 0)
    fields = {"type": "maxpool2d" if is_max else "avgpool2d",
              "kernel_size": written_pair(kernel)}
    if strides != kernel:
        fields["stride"] = written_pair(strides)
    if pads != (0, 0, 0, 0):
        fields["padding"] = written_padding(*pads)
    if at.get("ceil_mode", 0):
        fields["ceil_mode"] = True
    if is_max and dil != (1, 1):
        fields["dilation"] = written_pair(dil)
    if not is_max and not include and pads != (0, 0, 0, 0):
        fields["count_include_pad"] = False
    if max(pads[:2]) >= eh or max(pads[2:]) >= ew:
        return low.unsupported(node, f"padding {list(pads)} as large as the window",
                               "maxpool2d / avgpool2d (padding smaller than the window)")
    low.emit(fields, [x], node.output[0], [node] + ([pad_node] if pad_node else []),
             name_hint(node))


def global_pool(low: Lowering, node) -> None:
    x = node.input[0]
    if len(low.shape(x)) != 3:
        return low.unsupported(node, f"input {low.shape(x)}", "global_avgpool (C, H, W)")
    flat = _flattened_by_all_readers(low, node.output[0])
    if node.op_type == "GlobalAveragePool" and flat:  # the layer ends at the first flatten
        layer = low.emit({"type": "global_avgpool"}, [x], flat[0].output[0], [node, flat[0]],
                         name_hint(node))
        for reader in flat[1:]:
            low.skip(reader, layer.output)
        return
    h, w = low.shape(x)[1:]
    low.emit({"type": "maxpool2d" if node.op_type == "GlobalMaxPool" else "avgpool2d",
              "kernel_size": written_pair((h, w))}, [x], node.output[0], [node], name_hint(node))


def reduce_mean(low: Lowering, node) -> None:
    at = low.attrs(node)
    axes = at.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = low.const(node.input[1])
    x = node.input[0]
    if axes is None or len(low.shape(x)) != 3 or sorted(int(a) % 4 for a in axes) != [2, 3]:
        return low.unsupported(node, "a mean over other axes than H and W",
                               "global_avgpool (ReduceMean over H and W)")
    if at.get("keepdims", 1):
        return global_pool(low, node)
    low.emit({"type": "global_avgpool"}, [x], node.output[0], [node], name_hint(node))


def _flattened_by_all_readers(low: Lowering, value: str) -> list:
    """The readers of `value` if every one is a Flatten(axis 1), a Reshape to (N, C) or a
    Squeeze of H and W, else []."""
    readers = low.readers.get(value, [])
    if not readers or value in low.outputs:
        return []
    for r in readers:
        if r.op_type == "Flatten" and low.attrs(r).get("axis", 1) == 1:
            continue
        if r.op_type == "Reshape" and len(reshaped(low, r) or ()) == 1:
            continue
        if r.op_type == "Squeeze" and len(low.a.shapes.get(r.output[0], ())) == 2:
            continue
        return []
    return readers


def flatten(low: Lowering, node) -> None:
    x = node.input[0]
    axis = low.attrs(node).get("axis", 1)
    rank = len(low.a.shapes[x])
    if axis % rank != 1 if rank else True:
        return low.unsupported(node, f"Flatten(axis={axis}) mixes the batch into the features",
                               "flatten (axis 1)")
    low.emit({"type": "flatten"}, [x], node.output[0], [node], name_hint(node))


def reshape(low: Lowering, node) -> None:
    x = node.input[0]
    try:
        out = reshaped(low, node)
    except ValueError as e:
        return low.unsupported(node, str(e), "")
    if out is None:
        return low.unsupported(node, "a Reshape that moves the batch axis, or whose target "
                                     "shape is computed from data", "flatten")
    shape = low.shape(x)
    if out == shape:
        return low.skip(node, x)
    if len(out) == 1:
        return low.emit({"type": "flatten"}, [x], node.output[0], [node], name_hint(node))
    shuffle = _shuffle(low, node, shape, out)
    if shuffle:
        return
    low.unsupported(node, f"a Reshape from {shape} to {out} per sample",
                    "flatten (to (D,)), channel_shuffle (Reshape, Transpose, Reshape)")


def _shuffle(low: Lowering, node, shape, out) -> bool:
    """Reshape (C, H, W) -> (g, C/g, H, W), Transpose (0, 2, 1, 3, 4), Reshape back."""
    if len(shape) != 3 or len(out) != 4 or out[2:] != shape[1:] or out[0] * out[1] != shape[0]:
        return False
    t = low.only_reader(node.output[0])
    if t is None or t.op_type != "Transpose" or list(low.attrs(t).get("perm", [])) != [0, 2, 1,
                                                                                       3, 4]:
        return False
    back = low.only_reader(t.output[0])
    if back is None or back.op_type != "Reshape" or reshaped(low, back) != tuple(shape):
        return False
    low.emit({"type": "channel_shuffle", "groups": int(out[0])}, [node.input[0]],
             back.output[0], [node, t, back], name_hint(node))
    return True


def squeeze(low: Lowering, node) -> None:
    x = node.input[0]
    out = low.a.shapes[node.output[0]][1:]
    if tuple(out) == low.shape(x):
        return low.skip(node, x)
    if len(out) == 1 and len(low.shape(x)) == 3 and low.shape(x)[1:] == (1, 1):
        return low.emit({"type": "flatten"}, [x], node.output[0], [node], name_hint(node))
    low.unsupported(node, f"a {node.op_type} from {low.shape(x)} to {tuple(out)} per sample",
                    "flatten")


def add(low: Lowering, node) -> None:
    ins = [i for i in node.input if i]
    if not all(i in low.a.shapes for i in ins):
        return low.unsupported(node, "an Add of a constant that no conv2d, linear or batchnorm "
                                     "before it can take as its bias", None)
    if len(ins) == 1:
        return low.skip(node, ins[0])
    shapes = {low.a.shapes[i] for i in ins}
    if len(shapes) != 1:
        return low.unsupported(node, f"inputs of different shapes {sorted(shapes)} "
                                     "(broadcasting)", "add (inputs of one shape)")
    low.emit({"type": "add"}, ins, node.output[0], [node], name_hint(node))


def concat(low: Lowering, node) -> None:
    ins = [i for i in node.input if i]
    if not all(i in low.a.shapes for i in ins):
        return low.unsupported(node, "a Concat with constants", "concat (of layers' outputs)")
    rank = len(low.a.shapes[ins[0]])
    if low.attrs(node).get("axis") % rank != 1:
        return low.unsupported(node, f"a Concat along axis {low.attrs(node).get('axis')}",
                               "concat (along channels or features, axis 1)")
    if len(ins) == 1:
        return low.skip(node, ins[0])
    low.emit({"type": "concat"}, ins, node.output[0], [node], name_hint(node))


def split(low: Lowering, node) -> None:
    x = node.input[0]
    full = low.a.shapes[x]
    if low.attrs(node).get("axis", 0) % len(full) != 1:
        return low.unsupported(node, "a Split along another axis than the channels", "slice")
    start = 0
    for k, out in enumerate(node.output):
        size = low.a.shapes[out][1] if out in low.a.shapes else 0
        if out and low.readers.get(out) or out in low.outputs:
            low.emit({"type": "slice", **({"start": start} if start else {}),
                      "stop": start + size}, [x], out, [], name_hint(node, k))
        start += size
    low.done.add(id(node))


def slice_(low: Lowering, node) -> None:
    x = node.input[0]
    cut = axis_slice(low, node)
    if cut is None or cut[0] != 1 or cut[3] != 1:
        return low.unsupported(node, "a Slice of other axes than the channels, or with a step",
                               "slice (a range of channels)")
    _, start, stop, _ = cut
    if (start, stop) == (0, low.a.shapes[x][1]):
        return low.skip(node, x)
    low.emit({"type": "slice", **({"start": start} if start else {}), "stop": stop}, [x],
             node.output[0], [node], name_hint(node))


def dropout(low: Lowering, node) -> None:
    if len(node.output) > 1 and node.output[1] and low.readers.get(node.output[1]):
        return low.unsupported(node, "its mask output is used", "dropout")
    at = low.attrs(node)
    ratio = at.get("ratio", 0.5) if low.opset < 12 else (
        float(low.const(node.input[1])) if len(node.input) > 1 and node.input[1] else 0.5)
    if not 0 < ratio < 1:
        return low.skip(node, node.input[0])
    low.emit({"type": "dropout", "p": yaml_float(ratio)}, [node.input[0]], node.output[0], [node],
             name_hint(node))


def pad(low: Lowering, node) -> None:
    spec = low.pad_spec(node)
    if spec is None or len(low.shape(node.input[0])) != 3:
        return low.unsupported(node, "a Pad of other axes than H and W, or negative",
                               "pad2d (H and W)")
    mode, (t, b, left, r), value = spec
    if mode not in ("constant", "reflect", "edge") or not np.isfinite(value):
        return low.unsupported(node, f"mode {mode} with value {value}", "pad2d")
    fields = {"type": "pad2d", "padding": written_padding(t, b, left, r)}
    if mode != "constant":
        fields["mode"] = "reflect" if mode == "reflect" else "replicate"
    elif value != 0:
        fields.update(mode="constant", value=yaml_float(value))
    low.emit(fields, [node.input[0]], node.output[0], [node], name_hint(node))


def identity(low: Lowering, node) -> None:
    if node.op_type in ("Cast", "CastLike"):
        to = (np.dtype(low.onnx.helper.tensor_dtype_to_np_dtype(low.attrs(node)["to"]))
              if node.op_type == "Cast" else low.a.dtypes.get(node.input[1],
                                                              low.const(node.input[1]).dtype))
        if to.kind != "f":
            return low.unsupported(node, f"a cast to {to}", "netspec computes in floats")
    low.skip(node, node.input[0])


def transpose(low: Lowering, node) -> None:
    low.unsupported(node, "a Transpose outside a channel shuffle", None)


HANDLERS = {
    "Conv": conv, "BatchNormalization": batchnorm, "Gemm": gemm, "MatMul": matmul,
    "MaxPool": pool, "AveragePool": pool, "GlobalAveragePool": global_pool,
    "GlobalMaxPool": global_pool, "ReduceMean": reduce_mean, "Flatten": flatten,
    "Reshape": reshape, "Squeeze": squeeze, "Add": add, "Sum": add, "Concat": concat,
    "Split": split, "Slice": slice_, "Dropout": dropout, "Pad": pad, "Identity": identity,
    "Cast": identity, "CastLike": identity, "Transpose": transpose,
}
