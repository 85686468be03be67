"""onnx's own BackendTest, run against netspec's ONNX backend (netspec.onnx_backend).

Three kinds of cases run, as onnx ships them:
  * the nine light zoo models (AlexNet, ZFNet, VGG-19, GoogLeNet, Inception-v2, ResNet-50,
    SqueezeNet, ShuffleNet, DenseNet-121, converted from Caffe2 with constant weights), against
    their stored outputs;
  * the pytorch-converted cases (torch's nn module tests exported to ONNX);
  * the node cases of every operator netspec claims (CLAIMED), built in memory by
    onnx.backend.test.case.node from onnx's own definitions, with the expanded function bodies
    of those operators.
Every selected case must pass, except those EXCLUDED, each with the reason netspec does not run
it; docs/onnx-import.md gives the counts. The exclusions are checked too: each excluded case must
be refused with a netspec error naming what it cannot do (or, for training-mode dropout, run and
differ), so a case netspec learns to run is noticed, and none crashes.
"""

from __future__ import annotations

import os
import re
import tempfile
import unittest

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the ONNX backend needs pip install 'netspec[onnx]'")

import onnx
import onnx.backend.test
from onnx.backend.test.loader import load_model_tests

import netspec.onnx_backend as backend
from netspec.errors import NetspecError

# The ONNX operators netspec maps to layers (some only in the configurations its layers have).
CLAIMED = {"Conv", "BatchNormalization", "Gemm", "MatMul", "MaxPool", "AveragePool",
           "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "Flatten", "Reshape", "Squeeze",
           "Add", "Sum", "Concat", "Split", "Slice", "Dropout", "Pad", "Identity", "Relu",
           "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Clip", "PRelu", "Softmax",
           "LogSoftmax", "LRN", "Gelu", "Softplus"}

# Cases of claimed operators netspec does not run: a regular expression on the case name, and why.
EXCLUDED = {
    r"^test_(add|sum_(example|two_inputs)|concat|prelu_(broadcast|example)|gemm_(default_matrix"
    r"_bias|all_attributes|transposeA))":
        "needs two network inputs, or a second input that varies per sample (netspec networks "
        "have one input; the backend binds later inputs as constants)",
    r"pool_[13]d_|Conv[13]d|Pool[13]d|BatchNorm(1d_3d|3d)":
        "1-D and 3-D convolutions, pools and batchnorms: netspec's layers are 2-D",
    r"^test_clip_(default_(int8_)?(inbounds|max)|min_greater_than_max)":
        "Clip without a lower bound, or with min > max: no netspec layer (relu, relu6 and "
        "hardtanh clip from below)",
    r"^test_(identity|sum_one_input|training_dropout_zero_ratio)_cpu":
        "computes the identity: a netspec network has at least one layer",
    r"^test_identity_(opt|sequence)": "optional and sequence types: netspec takes tensors",
    r"(with_argmax|_mask|training_mode|_mask_ratio)_":
        "several outputs (indices, masks, batch statistics): a netspec network has one output",
    r"^test_training_dropout": "dropout in training mode draws its own random mask",
    r"^test_split_": "several outputs: a netspec network has one output",
    r"^test_averagepool_2d_dilations": "dilated average pooling: torch has none, nor netspec",
    r"^test_(flatten_(axis0|axis2|axis3|negative_axis1|negative_axis2|negative_axis4)|"
    r"reshape_|squeeze_|reduce_mean_|slice_|(log)?softmax_axis_[01]_cpu|"
    r"constant_pad_(negative_)?axes|matmul_(1d|3d|4d|bcast))":
        "reshapes, slices, reductions, softmaxes and pads of the batch axis or of every axis of "
        "a sample: netspec's layers work on channels (flatten, slice, softmax) or on H and W",
    r"^test_(log)?softmax_.*_expanded":
        "softmax written out with ReduceMax and ReduceSum: netspec has no reduction layers",
    r"^test_selu(_example)?(_expanded_ver18)?_cpu": "selu with other constants than torch's",
    r"^test_wrap_pad": "wrap padding: netspec pads with zeros, a constant, reflect or replicate",
    r"^test_PReLU_[13]d_multiparam":
        "a slope per channel of a 1-D or 3-D input: netspec's prelu takes (C, H, W) or (D,)",
    r"^test_(Embedding|GLU|PixelShuffle|PoissonNLLLLoss|Softmin|Softsign|ConvTranspose)":
        "operators netspec has no layer for (torch module tests that export other operators)",
}
DIFFERS = re.compile(r"^test_training_dropout")  # run, and differ (random masks)


def _base_op(name: str, ops: dict) -> str | None:
    """The operator a node case tests: its one op, or for an expanded function body the op
    of the case it expands."""
    base = re.sub(r"_expanded(_ver\d+)?$", "", name)
    found = ops.get(base)
    return found if found in CLAIMED else None


CASES = {kind: {c.name: c for c in load_model_tests(kind=kind)}
         for kind in ("node", "pytorch-converted")}


def _node_cases():
    ops = {}
    for case in CASES["node"].values():
        kinds = {n.op_type for n in case.model.graph.node} - {"Constant"}
        if len(kinds) == 1:
            ops[case.name] = kinds.pop()
    return {name for name in CASES["node"] if _base_op(name, ops) is not None}


NODE = sorted(_node_cases())
CONVERTED = sorted(CASES["pytorch-converted"])
REAL = ["test_bvlc_alexnet", "test_zfnet512", "test_vgg19", "test_inception_v1",
        "test_inception_v2", "test_resnet50", "test_squeezenet", "test_shufflenet",
        "test_densenet121"]


def excluded(name: str) -> str | None:
    for pattern, why in EXCLUDED.items():
        if re.search(pattern, name):
            return why
    return None


SELECTED = {f"{n}_cpu" for n in [*NODE, *CONVERTED, *REAL] if excluded(n + "_cpu") is None}
EXCLUDED_CASES = sorted(n for n in [*NODE, *CONVERTED] if excluded(n + "_cpu") is not None)


_home = tempfile.TemporaryDirectory(prefix="netspec-onnx-home-")
_saved_home = os.environ.get("ONNX_HOME")


def setup_module():
    os.environ["ONNX_HOME"] = _home.name  # the light models' data sets are written there


def teardown_module():
    if _saved_home is None:
        os.environ.pop("ONNX_HOME", None)
    else:
        os.environ["ONNX_HOME"] = _saved_home
    _home.cleanup()


def _selected_cases():
    """onnx's test classes with only the selected cases left on them (the others would be
    thousands of skipped items)."""
    # The light SqueezeNet in float64: its constant weights drive activations to ~1e10, where
    # its softmax magnifies float32 rounding that differs between rows of a GEMM.
    runner = onnx.backend.test.BackendTest(backend.NetspecBackend, __name__,
                                           test_kwargs={"test_squeezenet": {"dtype": "float64"}})
    classes = runner.test_cases
    for cls in classes.values():
        for attr in [a for a in vars(cls) if a.startswith("test_")]:
            if attr not in SELECTED:
                delattr(cls, attr)
    return classes


globals().update(_selected_cases())


def test_the_selection_is_what_the_docs_count():
    counts = {"node": len([n for n in NODE if f"{n}_cpu" in SELECTED]),
              "converted": len([n for n in CONVERTED if f"{n}_cpu" in SELECTED]),
              "real": len(REAL)}
    assert counts["real"] == 9
    assert counts["node"] >= 110 and counts["converted"] >= 38
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "onnx-import.md"),
              encoding="utf-8") as f:
        text = f.read()
    for kind, n in counts.items():
        assert f"<!-- backend {kind} {n} -->" in text, f"docs/onnx-import.md: {kind} {n}"
    assert f"<!-- backend excluded {len(EXCLUDED_CASES)} -->" in text


@pytest.mark.parametrize("name", EXCLUDED_CASES)
def test_excluded_cases_are_refused_cleanly(name):
    """Each excluded case is refused with a netspec error (or, for training-mode dropout, runs
    and differs); a case that now passes must move out of EXCLUDED."""
    case = _case(name)
    model, (inputs, outputs) = case
    try:
        got = backend.prepare(model).run(inputs)
    except NetspecError as e:
        assert str(e).strip()
        return
    if DIFFERS.search(name):
        assert not all(np.allclose(g, o, rtol=1e-3, atol=1e-7) for g, o in zip(got, outputs))
        return
    same = len(got) == len(outputs) and all(
        np.shape(g) == np.shape(o) and np.allclose(g, o, rtol=1e-3, atol=1e-7)
        for g, o in zip(got, outputs))
    assert not same, f"{name} passes now: take it out of EXCLUDED"
    pytest.fail(f"{name} ran and gave wrong results instead of a netspec error")


def _case(name):
    case = CASES["node"].get(name) or CASES["pytorch-converted"][name]
    if case.model is not None:
        inputs, outputs = case.data_sets[0]
        return case.model, ([np.asarray(_array(i)) for i in inputs],
                            [np.asarray(_array(o)) for o in outputs])
    return _converted(case)


def _array(item):
    return onnx.numpy_helper.to_array(item) if isinstance(item, onnx.TensorProto) else item


def _converted(case):
    model = onnx.load(os.path.join(case.model_dir, "model.onnx"))
    folder = os.path.join(case.model_dir, "test_data_set_0")
    files = sorted(os.listdir(folder))

    def load(prefix):
        return [onnx.numpy_helper.to_array(onnx.load_tensor(os.path.join(folder, f)))
                for f in files if f.startswith(prefix)]

    return model, (load("input_"), load("output_"))


def test_unittest_classes_hold_only_selected_cases():
    found = {a for cls in _selected_cases().values() for a in vars(cls) if a.startswith("test_")}
    assert found == SELECTED
    assert all(issubclass(cls, unittest.TestCase) for cls in _selected_cases().values())
