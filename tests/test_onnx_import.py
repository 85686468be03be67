"""netspec import: round trips, models exported from PyTorch, the light zoo models with random
weights, errors and safety, and the importer's own rules (names, inputs, loss).

* Round trip: every spec in specs/ and every layer's examples export to ONNX and import back
  to the same shape table (type, output shape, parameters and MACs of every layer but dropout,
  which export leaves out), the same parameter names, and logits equal to 1e-6 in float32.
* PyTorch: small nets of each family (ResNet, MobileNetV2, ShuffleNetV2, SqueezeNet, DenseNet,
  GoogLeNet, AlexNet) exported with torch.onnx.export import and match torch's outputs.
* The light zoo models with random weights in place of their constants equal onnxruntime.
* Errors: every unsupported node listed; external data outside the folder, sizes, cycles,
  dangling inputs, duplicate names, opsets; all refused before anything is allocated.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import randomized

import netspec
from netspec.errors import ModelError
from netspec.nn.layers import LAYERS
from netspec.spec.model import NetSpec

onnx = pytest.importorskip("onnx", reason="ONNX import needs pip install 'netspec[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the checks need pip install 'netspec[onnx]'")

from onnx import TensorProto
from onnx import helper as h

from netspec.interop.onnx_export import to_onnx
from netspec.interop.onnx_import import import_model, state_of

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
NORM = {"normalize": "none"}
CASES = [(tag, i, fields, tuple(shape))
         for tag, cls in sorted(LAYERS.items()) for i, (fields, shape) in enumerate(cls.examples)
         if tag != "dropout"]  # export leaves dropout out: the ONNX model is the eval network


def table(spec):
    return [(i.type, tuple(i.out_shape), i.params, i.macs) for i in spec.infos
            if i.type != "dropout"]


def round_trip(spec, x):
    plan = randomized(spec)
    imported = import_model(to_onnx(spec, plan, NORM))
    assert table(imported.spec) == table(spec)
    assert set(state_of(imported)) == set(plan.state_dict())  # the parameter names are kept
    again = netspec.compile(imported.spec, state=state_of(imported))
    want, got = plan.forward(x), again.forward(x)
    assert got.shape == want.shape
    err = float(np.max(np.abs(got - want))) / max(1.0, float(np.max(np.abs(want))))
    assert err <= 1e-6, err
    return imported


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_spec_round_trips(path):
    spec = netspec.load(path)
    x = np.random.default_rng(0).standard_normal((8, *spec.input.shape)).astype(np.float32)
    imported = round_trip(spec, x)
    assert imported.text.startswith("# Imported from")
    assert imported.spec.loss.type == spec.loss.type


@pytest.mark.parametrize(("tag", "i", "fields", "in_shape"), CASES,
                         ids=[f"{tag}-{i}" for tag, i, _, _ in CASES])
def test_every_layer_example_round_trips(tag, i, fields, in_shape):
    spec = NetSpec.model_validate({"input": {"shape": list(in_shape)},
                                   "layers": [{"type": tag, **fields}],
                                   "data": {"dataset": "custom-dir"}, "loss": {"type": "mse"}})
    x = np.random.default_rng(i).standard_normal((5, *in_shape)).astype(np.float32)
    imported = round_trip(spec, x)
    mine, back = spec.layers[0], imported.spec.layers[0]
    assert back.type == tag
    skip = {"name", "inputs"} | ({"padding"} if hasattr(mine, "pads") else set())
    own = {k: v for k, v in mine.model_dump().items() if k not in skip}
    got = {k: v for k, v in back.model_dump().items() if k not in skip}
    assert got == own  # the same hyperparameters, not only the same function
    if hasattr(mine, "pads"):  # 'same' comes back as the numbers it means
        assert back.pads() == mine.pads()


# ---------------------------------------------------------------- the written spec


def test_the_spec_reads_like_one_a_person_wrote():
    spec = netspec.load(ROOT / "specs" / "resnet-mini.yaml")
    imported = import_model(to_onnx(spec, randomized(spec), NORM))
    lines = imported.text.splitlines()
    assert lines[0] == "# Imported from an ONNX model by netspec import"
    assert "producer: netspec" in lines[1] and "opset 17" in lines[1]
    layers = [ln for ln in lines if ln.startswith("  - ")]
    written = [ln for ln in layers if "inputs:" in ln]
    assert len(written) == 4  # the three adds and the projection: branches and merges only
    assert "{type: conv2d, name: layer1.0.conv1, out_channels: 8, kernel_size: 3, padding: 1, " \
           "bias: false}" in imported.text
    assert "input: {shape: [1, 28, 28]}" in imported.text
    assert netspec.loads(imported.text).infos  # what was written loads as it is


def test_a_network_ending_in_softmax_gets_nll_on_probabilities():
    spec = netspec.load(ROOT / "specs" / "activations-mini.yaml")
    imported = import_model(to_onnx(spec, randomized(spec), NORM))
    assert imported.spec.loss.type == "nll" and imported.spec.loss.input == "probabilities"
    assert "loss: {type: nll, input: probabilities}" in imported.text


def test_names_from_the_model_are_made_valid_and_unique():
    from netspec.interop.onnx_import import clean
    from netspec.interop.onnx_layers import name_hint

    assert clean("gpu_0/conv1") == "gpu_0.conv1"
    assert clean("inception_3a/1x1") == "inception_3a.1x1"
    assert clean("features.0") == "features.0"
    assert clean("3x3") == "n3x3"
    assert clean("n12") == "" and clean("onnx::Conv_123") == "" and clean("relu4") == ""
    node = h.make_node("Relu", ["a"], ["b"], name="/layer1/layer1.0/relu_1/Relu")
    assert name_hint(node) == "layer1.0.relu_1"
    node = h.make_node("Relu", ["a"], ["b"], name="/inception3a/branch2/branch2.0/Relu")
    assert name_hint(node) == "inception3a.branch2.0"


# ---------------------------------------------------------------- models from PyTorch


torch = pytest.importorskip("torch")
nn = torch.nn


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                   nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else None)

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class Inverted(nn.Module):
    def __init__(self, cin, cout, stride, t=4):
        super().__init__()
        hid = cin * t
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid),
            nn.ReLU6(), nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class ShuffleUnit(nn.Module):
    def __init__(self, ch):
        super().__init__()
        half = ch // 2
        self.branch = nn.Sequential(
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        out = torch.cat((a, self.branch(b)), 1)
        n, c, hh, w = out.shape
        return out.view(n, 2, c // 2, hh, w).transpose(1, 2).contiguous().view(n, c, hh, w)


class Fire(nn.Module):
    def __init__(self, cin, s, e):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, s, 1)
        self.e1, self.e3 = nn.Conv2d(s, e, 1), nn.Conv2d(s, e, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.e1(x)), torch.relu(self.e3(x))], 1)


class DenseLayer(nn.Module):
    def __init__(self, cin, growth=8):
        super().__init__()
        self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 16, 1, bias=False),
                               nn.BatchNorm2d(16), nn.ReLU(),
                               nn.Conv2d(16, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.f(x)], 1)


class Inception(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.b1 = nn.Conv2d(cin, 8, 1)
        self.b2 = nn.Sequential(nn.Conv2d(cin, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), nn.Conv2d(cin, 4, 1))

    def forward(self, x):
        return torch.relu(torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1))


def head(cin, classes=10):
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]


FAMILIES = {
    "resnet": lambda: nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                    nn.ReLU(), nn.MaxPool2d(3, 2, 1), Basic(8, 8, 1),
                                    Basic(8, 16, 2), *head(16)),
    "mobilenet_v2": lambda: nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                          nn.ReLU6(), Inverted(8, 8, 1), Inverted(8, 16, 2),
                                          nn.Conv2d(16, 32, 1), nn.ReLU6(), *head(32)),
    "shufflenet_v2": lambda: nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(),
                                           ShuffleUnit(16), ShuffleUnit(16), *head(16)),
    "squeezenet": lambda: nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.ReLU(),
                                        nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 4, 8),
                                        Fire(16, 4, 8), nn.MaxPool2d(3, 2, ceil_mode=True),
                                        nn.Dropout(0.5), nn.Conv2d(16, 10, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    "densenet": lambda: nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), DenseLayer(16),
                                      DenseLayer(24), nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.Conv2d(32, 16, 1, bias=False), nn.AvgPool2d(2),
                                      *head(16)),
    "googlenet": lambda: nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(),
                                       nn.MaxPool2d(3, 2, ceil_mode=True), Inception(16),
                                       Inception(20), nn.Dropout(0.2), *head(20)),
    "alexnet": lambda: nn.Sequential(nn.Conv2d(3, 16, 5, 2), nn.ReLU(),
                                     nn.MaxPool2d(3, 2, ceil_mode=True),
                                     nn.Conv2d(16, 32, 3, padding=1, groups=2), nn.ReLU(),
                                     nn.MaxPool2d(3, 2, ceil_mode=True), nn.Flatten(),
                                     nn.Dropout(), nn.LazyLinear(32), nn.ReLU(), nn.Linear(32, 10)),
    "activations": lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.GELU(),
                                         nn.Linear(32, 32), nn.GELU(approximate="tanh"),
                                         nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 32),
                                         nn.ELU(0.5), nn.Linear(32, 32), nn.SELU(),
                                         nn.Linear(32, 32), nn.Softplus(2.0), nn.Linear(32, 32),
                                         nn.PReLU(), nn.Linear(32, 32), nn.Hardtanh(-0.5, 0.5),
                                         nn.Linear(32, 10), nn.LogSoftmax(1)),
}
OPSETS = {"resnet": 9, "squeezenet": 11, "googlenet": 13, "densenet": 17}  # others: 13
PRESERVE = {"resnet", "mobilenet_v2", "densenet"}  # keep BatchNormalization nodes


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_nets_exported_from_pytorch_import_and_match(family):
    torch.manual_seed(0)
    model = FAMILIES[family]()
    x = torch.randn(3, 3, 32, 32)
    model(x)  # materialise lazy layers
    for m in model.modules():  # random batchnorm statistics, so eval is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    buf = io.BytesIO()
    mode = torch.onnx.TrainingMode.PRESERVE if family in PRESERVE else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(model, x, buf, dynamo=False, opset_version=OPSETS.get(family, 13),
                      training=mode, input_names=["x"], dynamic_axes={"x": {0: "N"}})
    imported = import_model(onnx.load_from_string(buf.getvalue()))
    plan = netspec.compile(imported.spec, state=state_of(imported))
    with torch.no_grad():
        want = model(x).numpy()
    got = plan.forward(x.numpy())
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, np.max(np.abs(want)))
    types = {layer.type for layer in imported.spec.layers}
    expected = {"resnet": {"add", "batchnorm"}, "mobilenet_v2": {"relu6", "add"},
                "shufflenet_v2": {"slice", "channel_shuffle", "concat"},
                "squeezenet": {"concat", "global_avgpool"}, "densenet": {"concat", "avgpool2d"},
                "googlenet": {"concat", "maxpool2d"}, "alexnet": {"flatten", "linear"},
                "activations": {"gelu", "silu", "elu", "selu", "softplus", "prelu",
                                "hardtanh", "log_softmax"}}[family]
    assert expected <= types, types
    if family in ("squeezenet", "googlenet", "alexnet"):
        assert any(getattr(layer, "ceil_mode", False) for layer in imported.spec.layers)
    if family in ("mobilenet_v2", "shufflenet_v2", "alexnet"):
        assert any(getattr(layer, "groups", 1) > 1 for layer in imported.spec.layers)


def test_weights_the_exporter_shares_name_layers_by_their_modules():
    """torch.onnx.export keeps one copy of equal tensors (fresh batchnorms' ones and zeros),
    read by every such layer through Identity nodes: the layers are named by their modules
    (the nodes' names), not by the one weight's name, and a spec with torch's names loads
    the weights."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(3, 8, 3, bias=False))
    model.add_module("bn1", nn.BatchNorm2d(8))
    model.add_module("conv2", nn.Conv2d(8, 8, 3, bias=False))
    model.add_module("bn2", nn.BatchNorm2d(8))
    model.eval()
    buf = io.BytesIO()
    torch.onnx.export(model, torch.randn(1, 3, 8, 8), buf, dynamo=False, opset_version=13,
                      training=torch.onnx.TrainingMode.PRESERVE)
    graph = onnx.load_from_string(buf.getvalue())
    assert any(n.op_type == "Identity" for n in graph.graph.node)  # the exporter shared them
    imported = import_model(graph)
    names = [i.name for i in imported.spec.infos if i.type == "batchnorm"]
    assert names == ["bn1", "bn2"]
    assert set(state_of(imported)) == set(model.state_dict()) - {
        k for k in model.state_dict() if k.endswith("num_batches_tracked")}


def test_torch_padding_and_pooling_variants_import_and_match():
    """Reflection, replication, zero and constant pads; dilated and ceil-mode pools (without
    torch's LocalResponseNorm, which it exports through an If on the input's shape)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReflectionPad2d((1, 2, 0, 1)), nn.Conv2d(3, 8, 3),
                          nn.ReplicationPad2d(1), nn.MaxPool2d(2, 1, dilation=2),
                          nn.ZeroPad2d((0, 1, 1, 0)), nn.Conv2d(8, 8, 3),
                          nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
                          nn.ConstantPad2d(1, 0.5), *head(8)).eval()
    x = torch.randn(2, 3, 16, 16)
    buf = io.BytesIO()
    torch.onnx.export(model, x, buf, dynamo=False, opset_version=13)
    imported = import_model(onnx.load_from_string(buf.getvalue()))
    plan = netspec.compile(imported.spec, state=state_of(imported))
    with torch.no_grad():
        want = model(x).numpy()
    assert np.allclose(plan.forward(x.numpy()), want, rtol=1e-5, atol=1e-6)
    modes = {getattr(layer, "mode", None) for layer in imported.spec.layers}
    assert {"reflect", "replicate", "constant"} <= modes


# ---------------------------------------------------------------- the light zoo models


def randomized_light(name, seed=0):
    """The light model with random weights: each ConstantOfShape weight becomes a random
    initializer (variances positive)."""
    model = onnx.load(str(LIGHT / f"light_{name}.onnx"))
    shapes = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    keep = []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape":
            keep.append(node)
            continue
        dims = [int(d) for d in shapes[node.input[0]]]
        out = node.output[0]
        value = (rng.uniform(0.5, 2.0, dims) if "var" in out or "riv" in out
                 else rng.normal(0, 1 / np.sqrt(max(np.prod(dims[1:]), 1)), dims))
        model.graph.initializer.append(onnx.numpy_helper.from_array(value.astype(np.float32),
                                                                    out))
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


@pytest.mark.parametrize("name", ["squeezenet", "shufflenet"])
def test_light_models_with_random_weights_equal_onnxruntime(name):
    model = randomized_light(name)
    inp = next(i.name for i in model.graph.input
               if i.name not in {t.name for t in model.graph.initializer})
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {inp: x})[0]
    imported = import_model(model)
    got = netspec.compile(imported.spec, state=state_of(imported)).forward(x)
    assert np.max(np.abs(got.reshape(want.shape) - want)) <= 1e-4 * np.max(np.abs(want))


# ---------------------------------------------------------------- errors and safety


def graph_model(nodes, inputs, outputs, inits=(), opset=13):
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def declared(name, dims):
    """A float tensor that declares `dims` and holds no data."""
    t = TensorProto()
    t.name, t.data_type = name, TensorProto.FLOAT
    t.dims.extend(dims)
    return t


def vi(name, shape):
    return h.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def weights(name, shape, seed=0):
    return onnx.numpy_helper.from_array(
        np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def test_every_unsupported_node_is_listed_with_the_nearest_thing():
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
             h.make_node("HardSwish", ["c"], ["hs"], name="act"),
             h.make_node("Resize", ["hs", "", "scales"], ["up"], name="up", mode="nearest"),
             h.make_node("Relu", ["up"], ["r"], name="relu"),
             h.make_node("LpNormalization", ["r"], ["y"], name="norm")]
    scales = onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    model = graph_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", None)],
                        [weights("w", (4, 3, 3, 3)), scales], opset=14)
    with pytest.raises(ModelError) as e:
        import_model(model)
    lines = [str(p) for p in e.value.problems]
    assert len(lines) == 4 and "3 nodes cannot be imported; nothing was written" in lines[-1]
    assert "node 1 'act' (HardSwish)" in lines[0] and "silu" in lines[0]
    assert "node 2 'up' (Resize)" in lines[1] and "no upsampling layer" in lines[1]
    assert "node 4 'norm' (LpNormalization)" in lines[2]


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(108, np.float32).tobytes())
    (folder / "link.bin").symlink_to(secret)
    (folder / "ok.bin").write_bytes(np.ones(108, np.float32).tobytes())
    for location, refused in (("../secret.bin", True), (str(secret), True),
                              ("link.bin", True), ("ok.bin", False)):
        w = declared("w", [4, 3, 3, 3])
        w.data_location = TensorProto.EXTERNAL
        entry = w.external_data.add()
        entry.key, entry.value = "location", location
        model = graph_model([h.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])],
                            [vi("x", [1, 3, 8, 8])], [vi("y", None)], [w])
        path = folder / "m.onnx"
        path.write_bytes(model.SerializeToString())
        if refused:
            with pytest.raises(ModelError, match="outside the model's folder"):
                import_model(path)
        else:  # read from the file beside the model
            weight = next(v for k, v in state_of(import_model(path)).items()
                          if k.endswith("weight"))
            assert weight.shape == (4, 3, 3, 3) and np.all(weight == 1)


def test_a_model_declaring_huge_tensors_fails_fast_with_the_memory_it_needs():
    t = time.perf_counter()
    big = declared("w", [1_000_000_000, 3, 3, 3])
    model = graph_model([h.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])],
                        [vi("x", [1, 3, 8, 8])], [vi("y", None)], [big])
    with pytest.raises(ModelError, match=r"27,000,000,000 values \(100\.6 GiB\)"):
        import_model(model)
    shape = onnx.numpy_helper.from_array(np.array([1_000_000_000, 3, 1, 1], np.int64), "s")
    model = graph_model([h.make_node("ConstantOfShape", ["s"], ["w"]),
                         h.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1])],
                        [vi("x", [1, 3, 8, 8])], [vi("y", None)], [shape])
    with pytest.raises(ModelError, match="GiB as float32"):
        import_model(model)
    wide = onnx.numpy_helper.from_array(np.array([100_000, 3, 1, 1], np.int64), "s")
    model = graph_model([h.make_node("ConstantOfShape", ["s"], ["w"]),
                         h.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1])],
                        [vi("x", [1, 3, 4096, 4096])], [vi("y", None)], [wide])
    with pytest.raises(ModelError, match=r"'y' would have shape \[1, 100000, 4096, 4096\]"):
        import_model(model)
    assert time.perf_counter() - t < 10  # nothing of those sizes was allocated


def test_broken_graphs_are_clear_errors():
    relu = lambda i, o, n: h.make_node("Relu", [i], [o], name=n)
    cycle = graph_model([relu("b", "a", "first"), relu("a", "b", "second"), relu("x", "y", "r")],
                        [vi("x", [1, 4])], [vi("y", None)])
    with pytest.raises(ModelError, match="cycle through 2 nodes: node 0 'first'"):
        import_model(cycle)
    dangling = graph_model([h.make_node("Add", ["x", "nowhere"], ["y"], name="sum")],
                           [vi("x", [1, 4])], [vi("y", None)])
    with pytest.raises(ModelError, match="reads 'nowhere', which no node"):
        import_model(dangling)
    twice = graph_model([relu("x", "y", "one"), relu("x", "y", "two")], [vi("x", [1, 4])],
                        [vi("y", None)])
    with pytest.raises(ModelError, match="node 1 'two' \\(Relu\\) writes 'y', which node 0"):
        import_model(twice)
    with pytest.raises(ModelError, match="opset 99; the importer reads opsets 7 to"):
        import_model(_opset(99))
    with pytest.raises(ModelError, match="2 inputs"):
        import_model(graph_model([h.make_node("Add", ["x", "z"], ["y"])],
                                 [vi("x", [1, 4]), vi("z", [1, 4])], [vi("y", None)]))
    with pytest.raises(ModelError, match="not fixed; give the shape of one sample"):
        import_model(graph_model([relu("x", "y", "r")], [vi("x", ["N", "C"])],
                                 [vi("y", None)]))


def _opset(version):
    model = graph_model([h.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 4])],
                        [vi("y", None)])
    model.opset_import[0].version = version
    return model


def test_a_file_that_is_not_a_model_or_too_large(tmp_path, monkeypatch):
    from netspec.interop import onnx_read

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage that is not protobuf" * 3)
    with pytest.raises(ModelError, match="not an ONNX model"):
        import_model(junk)
    with pytest.raises(ModelError, match="no such file"):
        import_model(tmp_path / "missing.onnx")
    good = tmp_path / "good.onnx"
    good.write_bytes(graph_model([h.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 4])],
                                 [vi("y", None)]).SerializeToString())
    monkeypatch.setattr(onnx_read, "MAX_FILE_BYTES", 10)
    with pytest.raises(ModelError, match="more than an ONNX model can be"):
        import_model(good)


def test_shape_arithmetic_folds_and_input_shape_can_be_given():
    """torch writes `view(n, -1)` as Shape, Gather, Unsqueeze, Concat: folded to flatten."""
    x = vi("x", ["N", 2, "H", "W"])
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             h.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             h.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             h.make_node("Reshape", ["x", "target"], ["flat"]),
             h.make_node("Gemm", ["flat", "w"], ["y"], transB=1)]
    inits = [onnx.numpy_helper.from_array(np.array(0, np.int64), "zero"),
             onnx.numpy_helper.from_array(np.array([0], np.int64), "axes"),
             onnx.numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             weights("w", (3, 2 * 4 * 5))]
    model = graph_model(nodes, [x], [vi("y", None)], inits)
    with pytest.raises(ModelError, match="--input-shape"):
        import_model(model)
    imported = import_model(model, input_shape=(2, 4, 5))
    assert [layer.type for layer in imported.spec.layers] == ["flatten", "linear"]
    xs = np.random.default_rng(0).standard_normal((3, 2, 4, 5)).astype(np.float32)
    want = xs.reshape(3, -1) @ onnx.numpy_helper.to_array(inits[-1]).T
    got = netspec.compile(imported.spec, state=state_of(imported)).forward(xs)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_caffe2_batchnorm_with_scale_and_bias_folds_into_batchnorm():
    """BatchNormalization, then Mul and Add by per-channel constants (Caffe2's scale layer)."""
    rng = np.random.default_rng(0)
    c = 4
    arrays = {"s": rng.uniform(0.5, 2, c), "b": rng.normal(size=c), "m": rng.normal(size=c),
              "v": rng.uniform(0.5, 2, c), "k": rng.normal(size=(1, c, 1, 1)),
              "t": rng.normal(size=(c, 1, 1))}
    inits = [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()]
    nodes = [h.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["n"]),
             h.make_node("Mul", ["n", "k"], ["scaled"]), h.make_node("Add", ["scaled", "t"], ["y"])]
    model = graph_model(nodes, [vi("x", [2, c, 3, 3])], [vi("y", None)], inits, opset=9)
    imported = import_model(model)
    assert [layer.type for layer in imported.spec.layers] == ["batchnorm"]
    x = rng.standard_normal((2, c, 3, 3)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = netspec.compile(imported.spec, state=state_of(imported)).forward(x)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_old_opsets_are_converted_first():
    """An opset-6 model (Caffe2's era) is converted by onnx.version_converter."""
    model = onnx.load(str(Path(onnx.__file__).parent / "backend" / "test" / "data" /
                          "pytorch-converted" / "test_Conv2d_groups" / "model.onnx"))
    assert model.opset_import[0].version < 7
    imported = import_model(model)
    assert imported.source["converted_from"] == model.opset_import[0].version
    assert "(converted from" in imported.text.splitlines()[1]


def test_light_model_weights_load_into_the_zoo_specs_by_name():
    """Caffe's names nest as the zoo specs write them (inception_3a/1x1 is inception_3a.1x1):
    the ONNX zoo's GoogLeNet and AlexNet weights fill the specs, nothing left fresh."""
    from netspec import checkpoint

    for spec_name, light in (("googlenet", "inception_v1"), ("alexnet", "bvlc_alexnet")):
        spec = netspec.load(ROOT / "specs" / "zoo" / f"{spec_name}.yaml")
        imported = import_model(LIGHT / f"light_{light}.onnx")
        shapes = {f"{i.name}.{k}": s for i in spec.infos
                  for k, s in {**i.param_shapes, **i.buffer_shapes}.items()}
        found = checkpoint.initial_state(state_of(imported), shapes, light)
        assert found.fresh == [] and found.unused == [] and len(found.loaded) == len(shapes)


def test_zoo_shufflenet_computes_what_the_onnx_zoo_model_computes():
    """The tidied ShuffleNet (blocks, its own names) against the imported flat one, with the
    same random weights matched in layer order."""
    zoo = netspec.load(ROOT / "specs" / "zoo" / "shufflenet.yaml")
    flat = import_model(LIGHT / "light_shufflenet.onnx").spec

    def tensors(spec):
        return [(f"{i.name}.{k}", s) for i in spec.infos
                for k, s in {**i.param_shapes, **i.buffer_shapes}.items()]

    pairs = list(zip(tensors(zoo), tensors(flat)))
    assert len(tensors(zoo)) == len(tensors(flat)) and all(a[1] == b[1] for a, b in pairs)
    rng = np.random.default_rng(0)
    values = [(rng.uniform(0.5, 2, s) if k.endswith("var") else rng.normal(0, 0.1, s))
              .astype(np.float32) for (k, s), _ in pairs]
    a = netspec.compile(zoo, state={k: v for ((k, _), _), v in zip(pairs, values)})
    b = netspec.compile(flat, state={k: v for (_, (k, _)), v in zip(pairs, values)})
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    logits, probs = a.forward(x), b.forward(x)
    e = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(e / e.sum(1, keepdims=True), probs, rtol=1e-4, atol=1e-7)


def test_the_backend_is_importable_as_onnxruntime_backend_is():
    import netspec.onnx_backend as backend

    spec = netspec.load(ROOT / "specs" / "lenet.yaml")
    plan = randomized(spec)
    rep = backend.prepare(to_onnx(spec, plan, NORM))
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    (y,) = rep.run([x])
    assert y.dtype == np.float32 and np.allclose(y, plan.forward(x), rtol=1e-5, atol=1e-6)
    assert backend.supports_device("CPU") and not backend.supports_device("CUDA")
    node = h.make_node("Relu", ["a"], ["b"])
    (out,) = backend.run_node(node, [np.array([[-1.0, 2.0]], np.float32)])
    assert out.tolist() == [[0.0, 2.0]]
