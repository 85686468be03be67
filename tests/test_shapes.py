"""Shape rules, parameter counts and MACs against hand-computed values, and impossible networks.

Every expected number below is worked out by hand in its comment (PyTorch's formulas:
out = (in + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1), not copied from the code.
Impossible networks must raise SpecError naming the layer index and pointing at its line.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.nn.layers import LAYERS, ShapeError
from netspec.plan.options import PlanOptions

SPECS = Path(__file__).resolve().parent.parent / "specs"


def make(fields: dict):
    return LAYERS[fields["type"]].model_validate(fields)


# (layer fields, input shape, expected output shape)
SHAPES = [
    # conv2d
    ({"type": "conv2d", "out_channels": 6, "kernel_size": 5, "padding": 2}, (1, 28, 28),
     (6, 28, 28)),  # 28 + 4 - 5 + 1 = 28
    ({"type": "conv2d", "out_channels": 16, "kernel_size": 5}, (6, 14, 14),
     (16, 10, 10)),  # 14 - 5 + 1 = 10
    ({"type": "conv2d", "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1},
     (3, 32, 32), (8, 16, 16)),  # (32 + 2 - 3) // 2 + 1 = 15 + 1 = 16
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2}, (1, 28, 28),
     (4, 13, 13)),  # (28 - 3) // 2 + 1 = 12 + 1 = 13
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "dilation": 2}, (1, 28, 28),
     (4, 24, 24)),  # extent 2 * 2 + 1 = 5: 28 - 5 + 1 = 24
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": "same"}, (2, 7, 9),
     (4, 7, 9)),  # same keeps H and W
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 4, "padding": "same"}, (1, 28, 28),
     (4, 28, 28)),  # even kernel: total pad 3, split 1 / 2, size kept
    ({"type": "conv2d", "out_channels": 2, "kernel_size": 3, "dilation": 3, "padding": "same"},
     (1, 10, 10), (2, 10, 10)),  # extent 7, pad 3 + 3
    ({"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": "valid"}, (1, 10, 12),
     (2, 8, 10)),  # valid = no padding: 10 - 2, 12 - 2
    ({"type": "conv2d", "out_channels": 2, "kernel_size": [3, 5]}, (1, 10, 10),
     (2, 8, 6)),  # asymmetric kernel: 10 - 3 + 1 = 8, 10 - 5 + 1 = 6
    ({"type": "conv2d", "out_channels": 2, "kernel_size": 3, "stride": [2, 1],
      "padding": [1, 0]}, (1, 9, 9), (2, 5, 7)),  # (9 + 2 - 3) // 2 + 1 = 5; 9 - 3 + 1 = 7
    # max / average pooling (stride defaults to the kernel size, floor mode)
    ({"type": "maxpool2d", "kernel_size": 2}, (6, 28, 28), (6, 14, 14)),
    ({"type": "maxpool2d", "kernel_size": 3, "stride": 2}, (4, 7, 7),
     (4, 3, 3)),  # (7 - 3) // 2 + 1 = 3
    ({"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1}, (4, 28, 28),
     (4, 14, 14)),  # (28 + 2 - 3) // 2 + 1 = 13 + 1 = 14
    ({"type": "avgpool2d", "kernel_size": 2}, (3, 5, 5), (3, 2, 2)),  # (5 - 2) // 2 + 1 = 2
    ({"type": "avgpool2d", "kernel_size": 3, "stride": 1, "padding": 1}, (3, 6, 6),
     (3, 6, 6)),  # 6 + 2 - 3 + 1 = 6
    ({"type": "avgpool2d", "kernel_size": [2, 3]}, (1, 8, 9), (1, 4, 3)),  # stride (2, 3)
    ({"type": "maxpool2d", "kernel_size": 3, "padding": 1}, (2, 1, 1),
     (2, 1, 1)),  # 1 + 2 - 3 + 1 = 1: padding lets a 3x3 window fit a 1x1 map
    # flat and shape-preserving layers
    ({"type": "flatten"}, (16, 5, 5), (400,)),  # 16 * 25
    ({"type": "flatten"}, (7,), (7,)),
    ({"type": "global_avgpool"}, (32, 7, 7), (32,)),
    ({"type": "linear", "out_features": 120}, (400,), (120,)),
    ({"type": "batchnorm"}, (16, 7, 7), (16, 7, 7)),
    ({"type": "batchnorm"}, (50,), (50,)),
    ({"type": "dropout", "p": 0.3}, (4, 3, 3), (4, 3, 3)),
    ({"type": "leaky_relu"}, (10,), (10,)),
    ({"type": "sigmoid"}, (2, 3, 4), (2, 3, 4)),
    ({"type": "tanh"}, (5,), (5,)),
]


def _id(row):
    fields, shape, _ = row
    opts = ",".join(f"{k}={v}" for k, v in fields.items() if k != "type")
    return f"{fields['type']}[{opts}]{list(shape)}"


@pytest.mark.parametrize(("fields", "in_shape", "expected"), SHAPES, ids=[_id(r) for r in SHAPES])
def test_output_shape(fields, in_shape, expected):
    assert tuple(make(fields).output_shape(in_shape)) == expected


@pytest.mark.parametrize(("fields", "in_shape", "expected"), SHAPES, ids=[_id(r) for r in SHAPES])
def test_compiled_layer_produces_the_inferred_shape(fields, in_shape, expected):
    plan = netspec.plan.compiler.layer_plan(make(fields), in_shape, "float32")
    x = np.random.default_rng(0).standard_normal((2, *in_shape))
    assert plan.forward(x, train=True).shape == (2, *expected)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conv_and_pool_shapes_agree_with_torch():
    torch = pytest.importorskip("torch", reason="torch cross-checks the shape table")
    nn = torch.nn
    for fields, in_shape, expected in SHAPES:
        kind = fields["type"]
        opts = {k: v for k, v in fields.items() if k not in ("type", "out_channels")}
        if kind == "conv2d":
            module = nn.Conv2d(in_shape[0], fields["out_channels"], **opts)
        elif kind == "maxpool2d":
            module = nn.MaxPool2d(**opts)
        elif kind == "avgpool2d":
            module = nn.AvgPool2d(**opts)
        else:
            continue
        with torch.no_grad():
            out = module(torch.zeros(1, *in_shape))
        assert tuple(out.shape[1:]) == expected, fields


# ---------------------------------------------------------------- parameters and MACs

# (layer fields, input shape, parameter count, MACs per sample)
COUNTS = [
    ({"type": "conv2d", "out_channels": 6, "kernel_size": 5, "padding": 2}, (1, 28, 28),
     6 * 1 * 5 * 5 + 6, 6 * 28 * 28 * 1 * 5 * 5),  # 156; 117,600
    ({"type": "conv2d", "out_channels": 8, "kernel_size": [3, 5], "bias": False}, (3, 12, 12),
     8 * 3 * 3 * 5, 8 * 10 * 8 * 3 * 3 * 5),  # 360; out (8, 10, 8): 28,800
    ({"type": "conv2d", "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1},
     (3, 32, 32), 8 * 3 * 9 + 8, 8 * 16 * 16 * 3 * 9),  # 224; 55,296
    ({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "dilation": 2}, (1, 28, 28),
     4 * 9 + 4, 4 * 24 * 24 * 9),  # dilation adds no taps: 40; 20,736
    ({"type": "linear", "out_features": 120}, (400,), 400 * 120 + 120, 400 * 120),
    ({"type": "linear", "out_features": 10, "bias": False}, (84,), 840, 840),
    ({"type": "batchnorm"}, (16, 7, 7), 2 * 16, 0),  # weight and bias per channel
    ({"type": "batchnorm"}, (50,), 2 * 50, 0),
    ({"type": "maxpool2d", "kernel_size": 2}, (6, 28, 28), 0, 0),
    ({"type": "global_avgpool"}, (32, 7, 7), 0, 0),
    ({"type": "dropout"}, (10,), 0, 0),
]


@pytest.mark.parametrize(("fields", "in_shape", "params", "macs"), COUNTS,
                         ids=[_id((f, s, None)) for f, s, _, _ in COUNTS])
def test_params_and_macs(fields, in_shape, params, macs):
    layer = make(fields)
    out = layer.output_shape(in_shape)
    assert sum(math.prod(s) for s in layer.param_shapes(in_shape).values()) == params
    assert layer.macs(in_shape, out) == macs


def test_batchnorm_buffers():
    assert make({"type": "batchnorm"}).buffer_shapes((16, 7, 7)) == {
        "running_mean": (16,), "running_var": (16,)}


def test_lenet_totals():
    infos = netspec.load(SPECS / "lenet.yaml").infos
    # conv1 6*25+6, conv2 16*6*25+16, fc1 400*120+120, fc2 120*84+84, fc3 84*10+10
    assert [i.params for i in infos if i.params] == [156, 2416, 48120, 10164, 850]
    assert sum(i.params for i in infos) == 61_706
    # conv1 6*28*28*25, conv2 16*10*10*6*25, fc1 400*120, fc2 120*84, fc3 84*10
    assert [i.macs for i in infos if i.macs] == [117_600, 240_000, 48_000, 10_080, 840]
    assert sum(i.macs for i in infos) == 416_520
    assert [i.out_shape for i in infos] == [
        (6, 28, 28), (6, 14, 14), (6, 14, 14), (16, 10, 10), (16, 5, 5), (16, 5, 5), (400,),
        (120,), (120,), (84,), (84,), (10,)]


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_every_spec_runs_with_its_inferred_shapes(path, fused):
    spec = netspec.load(path)
    plan = netspec.compile(spec, options=PlanOptions(fuse=fused))
    plan.forward(np.random.default_rng(0).standard_normal((2, *spec.input.shape)), train=True)
    # a conv fused with the average pool after it outputs the pooled array (netspec/plan/fuse.py)
    shape = {i.name: i.out_shape for i in spec.infos}
    expected = [shape[plan.fused.get(i.name, i.name)] for i in spec.infos]
    assert [o.shape[:-1] for o in plan.outputs] == expected
    # conv+avgpool, relu+maxpool in training; conv+batchnorm(+relu), conv+relu in eval
    fusing = {"lenet.yaml", "record.yaml", "record-aug.yaml", "inception-mini.yaml",
              "shapes-cnn.yaml", "cifar10-resnet.yaml", "convnet-bn.yaml", "resnet-mini.yaml",
              "shufflenet-mini.yaml", "tiny-zoo.yaml"}
    assert bool(plan.fused) == (fused and path.name in fusing)
    for info in spec.infos:  # compiled tensors have the inferred shapes
        for key, shape in info.param_shapes.items():
            assert plan.params[f"{info.name}.{key}"].shape == shape
        for key, shape in info.buffer_shapes.items():
            assert plan.buffers[f"{info.name}.{key}"].shape == shape


# ---------------------------------------------------------------- impossible networks


def _spec_error(text: str) -> netspec.Problem:
    """Load YAML text; return the first problem, checking it points at the `# <-` line."""
    text = textwrap.dedent(text).lstrip("\n")
    marked = [n for n, line in enumerate(text.splitlines(), 1) if "# <-" in line]
    with pytest.raises(netspec.SpecError) as info:
        netspec.loads(text, "t.yaml")
    problem = info.value.problems[0]
    assert problem.file == "t.yaml"
    assert problem.line == marked[0], f"points at line {problem.line}, expected {marked[0]}"
    return problem


def test_kernel_larger_than_padded_input():
    p = _spec_error("""
        input: {shape: [1, 28, 28]}
        layers:
          - {type: conv2d, out_channels: 4, kernel_size: 5}    # -> (4, 24, 24)
          - {type: maxpool2d, kernel_size: 2}                   # -> (4, 12, 12)
          - {type: conv2d, out_channels: 4, kernel_size: 7, padding: 0, dilation: 2}  # <- 13 > 12
          - {type: flatten}
          - {type: linear, out_features: 10}
        """)
    assert p.path.startswith("layers[2]")
    assert "larger than the padded input 12x12" in p.message and "(4, 12, 12)" in p.message


def test_pooling_leaves_nothing():
    p = _spec_error("""
        input: {shape: [1, 28, 28]}
        layers:
          - {type: avgpool2d, kernel_size: 4}   # -> 7x7
          - {type: avgpool2d, kernel_size: 4}   # -> 1x1
          - type: maxpool2d                     # <- a 2x2 window on a 1x1 map
            kernel_size: 2
          - {type: flatten}
          - {type: linear, out_features: 10}
        """)
    assert p.path.startswith("layers[2]")
    assert "leaves nothing" in p.message


def test_linear_after_an_image_suggests_flatten():
    p = _spec_error("""
        input: {shape: [1, 28, 28]}
        layers:
          - {type: conv2d, out_channels: 4, kernel_size: 3}
          - {type: relu}
          - {type: linear, out_features: 10}    # <- (4, 26, 26) is not flat
        """)
    assert p.path.startswith("layers[2]")
    assert "(4, 26, 26)" in p.message and "{type: flatten}" in p.message


def test_conv_on_a_flat_input():
    p = _spec_error("""
        input: {shape: [784]}
        layers:
          - type: conv2d       # <- the input is flat
            out_channels: 4
            kernel_size: 3
          - {type: flatten}
          - {type: linear, out_features: 10}
        """)
    assert p.path.startswith("layers[0]")
    assert "(784,)" in p.message and "[C, H, W]" in p.message


def test_global_avgpool_on_a_flat_input():
    p = _spec_error("""
        input: {shape: [1, 28, 28]}
        layers:
          - {type: flatten}
          - {type: linear, out_features: 32}
          - {type: global_avgpool}    # <- (32,) has no H and W
          - {type: linear, out_features: 10}
        """)
    assert p.path.startswith("layers[2]")
    assert "(32,)" in p.message and "flatten" in p.message


def test_global_avgpool_shape_error_is_helpful():
    with pytest.raises(ShapeError, match=r"expects an image input \(C, H, W\), got \(12,\)"):
        make({"type": "global_avgpool"}).output_shape((12,))
