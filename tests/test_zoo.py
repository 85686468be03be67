"""The classic CNN zoo in specs/zoo/: each spec validates, counts what independent sources count,
draws collapsed, and has every distinct layer gradient-checked at a reduced input size.

Full-size checks (outputs against torchvision and onnxruntime, speed) are in
benchmarks/zoo_check.py and benchmarks/zoo_speed.py; here the nets only pass through shape
inference at 224x224, and run only at reduced sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.plan.compiler import layer_plan
from netspec.plan.gradcheck import check_layer_plan, check_multi_input

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "specs" / "zoo").glob("*.yaml"))

# Parameter counts and GMACs from independent sources: torchvision's model documentation
# (num_params, GFLOPS as it reports multiply-accumulates) for the torchvision nets, and the
# ONNX model zoo's Caffe / Caffe2 models for the others (test_caffe_nets_count_as_the_onnx_zoo).
COUNTS = {
    "resnet50": (25_557_032, 4.09),
    "densenet121": (7_978_856, 2.83),
    "mobilenet_v2": (3_504_872, 0.30),
    "shufflenet_v2": (2_278_604, 0.14),
    "squeezenet": (1_248_424, 0.82),
    "alexnet": (60_965_224, None),
    "googlenet": (6_998_552, None),
    "shufflenet": (1_393_320, None),
}

# Reduced input sizes for the gradient checks, and the overrides that make them fit (a final
# fixed-size average pool shrinks with the image).
REDUCED = {
    "resnet50": ([3, 32, 32], []), "densenet121": ([3, 32, 32], []),
    "mobilenet_v2": ([3, 32, 32], []), "shufflenet_v2": ([3, 32, 32], []),
    "squeezenet": ([3, 32, 32], []), "alexnet": ([3, 67, 67], []),
    "googlenet": ([3, 65, 65], ["layers[21].kernel_size=2"]),
    "shufflenet": ([3, 64, 64], ["layers[7].kernel_size=2"]),
}


def test_every_zoo_spec_is_listed():
    assert {p.stem for p in ZOO} == set(COUNTS) == set(REDUCED)
    assert len(ZOO) >= 7


@pytest.mark.parametrize("path", ZOO, ids=[p.stem for p in ZOO])
def test_counts_agree_with_independent_sources(path):
    spec = netspec.load(path)
    params = sum(i.params for i in spec.infos)
    macs = sum(i.macs for i in spec.infos)
    want_params, want_gmacs = COUNTS[path.stem]
    assert params == want_params
    if want_gmacs is not None:
        assert round(macs / 1e9, 2) == want_gmacs
    assert spec.input.shape[1:] in ((224, 224), (227, 227))


def test_resnet50_and_densenet121_as_the_issue_states():
    """25.6 M parameters and about 4.1 G MACs for ResNet-50 at 224x224; 8.0 M for DenseNet."""
    resnet = netspec.load(ROOT / "specs" / "zoo" / "resnet50.yaml")
    assert round(sum(i.params for i in resnet.infos) / 1e6, 1) == 25.6
    assert abs(sum(i.macs for i in resnet.infos) / 1e9 - 4.1) < 0.05
    densenet = netspec.load(ROOT / "specs" / "zoo" / "densenet121.yaml")
    assert round(sum(i.params for i in densenet.infos) / 1e6, 1) == 8.0


@pytest.mark.parametrize("path", ZOO, ids=[p.stem for p in ZOO])
def test_draws_collapsed(path):
    from netspec.viz import draw

    spec = netspec.load(path)
    scene = draw.draw(spec, collapse=True)
    assert scene.meta["params"] == COUNTS[path.stem][0]
    assert scene.meta["layers"] == len(spec.infos)


@pytest.mark.parametrize("path", ZOO, ids=[p.stem for p in ZOO])
def test_every_distinct_layer_gradient_checks_at_a_reduced_size(path):
    """Every layer configuration of the net (fields and input shape; repeated modules are
    checked once) alone, in float64, at a reduced input size."""
    shape, overrides = REDUCED[path.stem]
    spec = netspec.load(path, [f"input.shape={shape}", *overrides])
    cfg = spec.gradcheck.model_copy(update={"max_entries": 6})
    rng = np.random.default_rng(0)
    seen, rows = set(), []
    for info in spec.infos:
        key = (info.layer.model_dump_json(exclude={"name", "inputs"}), str(info.in_shape))
        if key in seen:
            continue
        seen.add(key)
        if info.layer.multi_input:
            rows += check_multi_input(info, cfg, rng)
        else:
            plan = layer_plan(info.layer, info.in_shape, "float64", 0, info.name)
            rows += check_layer_plan(plan, cfg, rng, info.type)
    failed = [f"{r.layer}.{r.tensor}: {r.rel_err:.2e}" for r in rows if not r.passed]
    assert not failed, failed
    assert {r.type for r in rows} == {i.type for i in spec.infos}  # every layer type checked
    assert sum(r.checked for r in rows) > 100


def test_reduced_zoo_nets_run_forward_and_backward():
    """The reduced nets compile and run a training step (shapes wired end to end)."""
    for name in ("resnet50", "mobilenet_v2", "shufflenet_v2", "densenet121"):
        shape, overrides = REDUCED[name]
        spec = netspec.load(ROOT / "specs" / "zoo" / f"{name}.yaml",
                            [f"input.shape={shape}", *overrides])
        plan = netspec.compile(spec, "float32")
        x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
        y = plan.forward(x, train=True)
        _, dy = spec.loss(y, np.array([1, 2]))
        dx = plan.backward(dy)
        assert y.shape == (2, 1000) and dx.shape == x.shape and np.isfinite(dx).all()
