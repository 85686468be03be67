"""Verify an exported ONNX model against netspec itself (`netspec export --check`, the tests).

    report = verify(model, spec, plan, x)    # x: a real batch, (N, C, H, W) or (N, D)
    report.passed, report.rows

Each check is a row of the report (rows of one check: one per layer for shapes):
  * checker: onnx.checker.check_model(full_check=True) (which also runs strict shape inference);
  * shape: ONNX shape inference gives every layer's output the shape netspec's shape inference
    gives it, (N, *out_shape) with the symbolic batch dimension N;
  * logits: onnxruntime's output on `x` equals the plan's eval-mode forward within TOL, measured
    as max|onnx - netspec| / max(1, max|netspec|) (float32: an absolute error for logits below
    1, relative above);
  * predictions: both pick the same class for every sample (but near-ties, see below);
  * accuracy (given labels): both score the same accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netspec.errors import ExportError
from netspec.interop.onnx_export import BATCH, EXTRA, INPUT, OUTPUT, import_onnx

TOL = 1e-5


@dataclass
class Row:
    check: str  # "checker", "shape", "logits", "predictions", "accuracy"
    subject: str  # layer name, or "model"
    expected: str
    found: str
    passed: bool


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    logits_error: float = float("nan")
    accuracy: tuple[float, float] | None = None  # (netspec, onnxruntime) with labels

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]


def session(model, threads: int = 1):
    """An onnxruntime CPU InferenceSession of `model` (ExportError if onnxruntime is missing)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(f"checking an ONNX model needs onnxruntime: {EXTRA}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def run(model, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """onnxruntime's logits for x (float32), in batches."""
    sess = session(model)
    x = np.ascontiguousarray(x, dtype=np.float32)
    parts = [sess.run([OUTPUT], {INPUT: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def verify(model, spec, plan, x: np.ndarray, labels: np.ndarray | None = None) -> Report:
    """Check `model` (from onnx_export.to_onnx(spec, plan)) on the batch `x`; with `labels`
    also compare the accuracy of the two."""
    onnx = import_onnx()
    report = Report()
    try:
        onnx.checker.check_model(model, full_check=True)
        report.rows.append(Row("checker", "model", "valid", "valid", True))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        report.rows.append(Row("checker", "model", "valid", _first_line(e), False))
    report.rows += _shape_rows(onnx, model, spec)
    x = np.asarray(x, dtype=np.float32)
    try:
        got = run(model, x)
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors share no narrower base
        report.rows.append(Row("logits", "model", "onnxruntime runs", _first_line(e), False))
        return report
    want = plan.forward(x, train=False).astype(np.float32)
    if got.shape != want.shape:
        report.rows.append(Row("logits", "model", str(want.shape), str(got.shape), False))
        return report
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = report.logits_error = float(np.max(np.abs(got - want))) / scale if want.size else 0.0
    report.rows.append(Row("logits", f"{len(x)} samples", f"error <= {TOL:g}",
                           f"error {err:.2e}", err <= TOL))
    report.rows.append(_predictions_row(got, want))
    if labels is not None:
        labels = np.asarray(labels)
        mine = float(np.mean(want.argmax(1) == labels))
        theirs = float(np.mean(got.argmax(1) == labels))
        report.accuracy = (mine, theirs)
        report.rows.append(Row("accuracy", f"{len(x)} samples", f"netspec {100 * mine:.2f}%",
                               f"onnxruntime {100 * theirs:.2f}%", mine == theirs))
    return report


def _predictions_row(got: np.ndarray, want: np.ndarray) -> Row:
    """Both pick the same class for every sample, except where netspec's own top two are
    closer than the logits tolerance allows (a near-tie the tolerance cannot order)."""
    n = len(want)
    if want.ndim != 2:
        return Row("predictions", f"{n} samples", "(N, classes) logits", str(want.shape), True)
    mine, theirs = want.argmax(1), got.argmax(1)
    rows = np.flatnonzero(mine != theirs)
    margin = want[rows, mine[rows]] - want[rows, theirs[rows]]
    slack = 2 * TOL * max(1.0, float(np.max(np.abs(want)))) if n else 0.0
    ties = int(np.sum(margin <= slack))
    found = f"{n - len(rows)} equal" + (f", {ties} near-ties" if ties else "")
    return Row("predictions", f"{n} samples", f"{n} equal", found, ties == len(rows))


def _shape_rows(onnx, model, spec) -> list[Row]:
    """One row per layer: ONNX's inferred shape of its output against netspec's."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        return [Row("shape", "model", "inferred", _first_line(e), False)]
    g = inferred.graph
    shapes = {v.name: _dims(v) for v in [*g.input, *g.value_info, *g.output]}
    outputs = layer_values(model, spec)
    rows = []
    for info in spec.infos:
        want = (BATCH, *info.out_shape)
        found = shapes.get(outputs.get(info.name))
        rows.append(Row("shape", info.name, _fmt(want), _fmt(found), found == want))
    return rows


def layer_values(model, spec) -> dict[str, str]:
    """{layer name: the ONNX value holding its output}: the output of the layer's last node
    ('conv1', 'conv1/Op'), or, for a layer left out (dropout), the value it passes on."""
    last = {}
    for node in model.graph.node:
        last[node.name.split("/", 1)[0]] = node.output[0]
    values = {INPUT: INPUT}
    for info in spec.infos:
        values[info.name] = last.get(info.name, values.get(info.inputs[0]))
    return values


def _dims(value) -> tuple | None:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_param if d.HasField("dim_param") else
                 (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim)


def _fmt(shape) -> str:
    """('N', 6, 28, 28) -> '(N, 6, 28, 28)'."""
    return "none" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
