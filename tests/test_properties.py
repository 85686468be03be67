"""Property-based tests (hypothesis): no input gives a traceback.

Generated YAML texts, spec structures, `--set` values and CLI argument lists. A spec that loads
must be valid (its resolved form loads again to the same spec); anything else must be a
NetspecError with a message, and on the command line exit code 1 or 2 with a message.

The profile is derandomized (the same examples on every run) with a budget of a few hundred
examples, about half a minute in all. Graph specs (blocks, repeat, with, inputs, add and
concat) are generated too; those that load must also compile and run forward and backward.
"""

import os
import string
import tempfile

import pytest
import yaml
from conftest import TINY

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import netspec
from netspec.cli import app
from netspec.nn.layers import LAYERS

settings.register_profile("netspec", derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.load_profile("netspec")

GRAPH = f"""
name: graph
input: {{shape: [1, 28, 28]}}
blocks:
  basic:
    params: {{ch: 2}}
    layers:
      - {{type: conv2d, name: c1, out_channels: $ch, kernel_size: 3, padding: 1}}
      - {{type: dropout, p: 0.1}}
      - {{type: add, inputs: [dropout1, in]}}
layers:
  - {{type: conv2d, name: stem, out_channels: 2, kernel_size: 5, stride: 4}}
  - {{block: basic, name: layer1, repeat: 2}}
  - {{type: concat, inputs: [layer1, stem]}}
  - {{type: flatten}}
  - {{type: linear, name: fc, out_features: 10}}
data: {{dataset: {TINY}}}
train: {{epochs: 1, batch_size: 128, eval_batch_size: 256}}
"""
VALID = f"""
name: prop
seed: 0
input: {{shape: [1, 28, 28]}}
layers:
  - {{type: conv2d, name: conv1, out_channels: 2, kernel_size: 5, stride: 4}}
  - {{type: relu}}
  - {{type: flatten}}
  - {{type: linear, name: fc, out_features: 10}}
data: {{dataset: {TINY}}}
train: {{epochs: 1, batch_size: 128, eval_batch_size: 256}}
"""

KEYS = ["name", "seed", "input", "shape", "layers", "type", "loss", "data", "train", "epochs",
        "batch_size", "optimizer", "lr", "schedule", "dataset", "validation", "normalize",
        "out_channels", "out_features", "kernel_size", "stride", "padding", "dilation", "p",
        "init", "weight", "bias", "defaults", "gradcheck", "num_classes", "momentum", "eps"]
WORDS = KEYS + list(LAYERS) + ["sgd", "adam", "cosine", "step", "mnist", "same", "valid",
                               "kaiming_normal", "zeros", "cross_entropy", "mse", "standardize"]


def _outcome(text, overrides=()):
    """Load; a spec that loads must round-trip through its resolved YAML."""
    try:
        spec = netspec.loads(text, "gen.yaml", list(overrides))
    except netspec.NetspecError as e:
        assert e.problems and all(str(p) for p in e.problems)
        hypothesis.event("error")
        return "error"
    hypothesis.event("valid spec")
    again = netspec.loads(spec.to_yaml(), "resolved.yaml")
    assert again.resolved() == spec.resolved()  # every default written out, the same spec
    assert len(again.infos) == len(spec.layers)
    return "ok"


# ------------------------------------------------------------------ YAML text and structures

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS),
    st.text(string.printable, max_size=8), st.text(max_size=4))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12)


@given(st.text(max_size=200))
@settings(max_examples=150)
def test_any_text_is_a_spec_or_an_error(text):
    _outcome(text)


ints = st.one_of(st.integers(1, 6), st.integers(-2, 0), st.just(10**12))
LAYER_FIELDS = {
    "conv2d": {"out_channels": ints, "kernel_size": st.one_of(st.integers(1, 5),
                                                              st.lists(st.integers(0, 4),
                                                                       max_size=3)),
               "stride": st.integers(0, 3), "padding": st.one_of(st.integers(-1, 2),
                                                                 st.sampled_from(["same",
                                                                                  "valid"])),
               "dilation": st.integers(1, 2), "bias": st.booleans(),
               "init": st.sampled_from(["kaiming_normal", "zeros", "nope",
                                        {"type": "normal", "std": 0.1}])},
    "linear": {"out_features": st.one_of(st.just(10), ints), "bias": st.booleans()},
    "maxpool2d": {"kernel_size": st.integers(0, 3), "stride": st.integers(1, 2),
                  "padding": st.integers(0, 2)},
    "avgpool2d": {"kernel_size": st.integers(0, 3), "padding": st.integers(0, 2)},
    "dropout": {"p": st.floats(-0.5, 1.5)},
    "leaky_relu": {"negative_slope": st.floats(-1, 1)},
    "batchnorm": {"eps": st.floats(-1, 1e-3), "momentum": st.floats(0, 1.5)},
}


def small_layer():
    def fields(kind):
        optional = dict(LAYER_FIELDS.get(kind, {}))
        wild = {**optional, "name": st.sampled_from(["a", "b", "1x", "ä"]), "bogus": scalars}
        return st.one_of(st.just({"type": kind}),
                         st.fixed_dictionaries({"type": st.just(kind)}, optional=optional),
                         st.fixed_dictionaries({"type": st.just(kind)}, optional=wild))

    return st.sampled_from(sorted(LAYERS)).flatmap(fields)


shapes = st.one_of(st.just([1, 28, 28]), st.lists(st.integers(1, 12), min_size=1, max_size=3),
                   st.just([28, 28, 1]), st.lists(st.integers(-1, 9), max_size=4))
datas = st.fixed_dictionaries({}, optional={
    "dataset": st.sampled_from(["mnist", "fashion-mnist", str(TINY), "mnsit"]),
    "validation": st.sampled_from([0, 0.1, 1, 1.0, 100, -1, 2.5]),
    "normalize": st.sampled_from(["standardize", "scale", "none", "standardise"]),
    "num_classes": st.sampled_from([10, 2, 0])})
trains = st.fixed_dictionaries({}, optional={
    "epochs": ints, "batch_size": ints, "eval_batch_size": ints,
    "optimizer": st.sampled_from([{"type": "sgd", "lr": 0.1}, {"type": "adam"}, "sgd",
                                  {"type": "adamw", "betas": [0.9, 1.5]}, {"type": "sgdm"}]),
    "schedule": st.sampled_from([{"type": "cosine", "warmup_epochs": 1}, {"type": "step"},
                                 {"type": "multistep", "milestones": [3, 1]}, "constant"])})
layer_lists = st.lists(small_layer(), min_size=0, max_size=5).map(
    lambda layers: [*layers, {"type": "flatten"}, {"type": "linear", "out_features": 10}])
plausible = st.fixed_dictionaries(
    {"input": st.fixed_dictionaries({"shape": shapes}), "layers": layer_lists},
    optional={"data": datas, "train": trains,
              "loss": st.sampled_from([{"type": "mse"}, {"type": "cross_entropy",
                                                         "label_smoothing": 0.1}])})
wild = st.fixed_dictionaries(
    {"input": st.fixed_dictionaries({"shape": shapes}), "layers": layer_lists},
    optional={"name": scalars, "seed": scalars, "data": st.one_of(datas, values),
              "train": st.one_of(trains, values), "loss": st.one_of(st.just("ce"), values),
              "defaults": values, "extra": values})
specs = st.one_of(plausible, wild)


@given(specs)
@settings(max_examples=200)
def test_generated_spec_structures_are_valid_or_located_errors(data):
    _outcome(yaml.safe_dump(data, sort_keys=False))


# ------------------------------------------------------------------ graph specs

# names that layers, block uses and inputs draw from, so that wiring sometimes resolves
NAMES = ["stem", "c1", "c2", "sum", "layer1", "in", "input", "nope", "1x", "a.b"]
ref_lists = st.one_of(st.lists(st.sampled_from(NAMES), min_size=0, max_size=3),
                      st.sampled_from(NAMES), st.just([3]), st.none())
params = st.one_of(st.sampled_from(["$ch", "$k", "$", "$nope", "$$ch", "c$ch"]), scalars)


def graph_layer(in_block):
    """A layer with a name and inputs, or an add/concat; in a block, '$name' values too."""
    value = st.one_of(ints, params) if in_block else ints
    plain = st.fixed_dictionaries(
        {"type": st.sampled_from(["conv2d", "relu", "batchnorm", "maxpool2d", "flatten",
                                  "linear", "dropout"])},
        optional={"name": st.sampled_from(NAMES + [3]), "inputs": ref_lists,
                  "out_channels": value, "out_features": value, "kernel_size": value})
    join = st.fixed_dictionaries({"type": st.sampled_from(["add", "concat"]),
                                  "inputs": ref_lists},
                                 optional={"name": st.sampled_from(NAMES)})
    return st.one_of(plain, join, small_layer())


def block_use(names):
    return st.fixed_dictionaries(
        {"block": st.one_of(st.sampled_from(names), scalars)},
        optional={"name": st.sampled_from(NAMES + [5]),
                  "repeat": st.sampled_from([1, 2, 3, 0, -1, 10**9, "2", True, 2.0, None]),
                  "with": st.one_of(st.dictionaries(st.sampled_from(["ch", "k", "cn"]),
                                                    st.one_of(ints, params), max_size=2),
                                    st.sampled_from([[1], "ch", None])),
                  "inputs": ref_lists,
                  "bogus": scalars})


BLOCK_NAMES = ["basic", "down", "in"]
blocks = st.dictionaries(
    st.sampled_from(BLOCK_NAMES),
    st.one_of(st.fixed_dictionaries(
        {"layers": st.lists(st.one_of(graph_layer(True), block_use(BLOCK_NAMES)),
                            min_size=0, max_size=4)},
        optional={"params": st.one_of(st.dictionaries(st.sampled_from(["ch", "k"]),
                                                      st.one_of(ints, st.none()), max_size=2),
                                      scalars)}), scalars),
    max_size=2)
GOOD_BLOCK = {"basic": {"params": {"ch": 2}, "layers": [
    {"type": "conv2d", "name": "c1", "out_channels": "$ch", "kernel_size": 3, "padding": 1},
    {"type": "relu", "name": "r"}, {"type": "add", "name": "sum", "inputs": ["r", "in"]}]}}
CUSTOM = {"dataset": "custom", "num_classes": 10}  # any input shape
graph_specs = st.fixed_dictionaries(
    {"input": st.fixed_dictionaries({"shape": st.sampled_from([[1, 28, 28], [2, 8, 8]])}),
     "layers": st.lists(st.one_of(graph_layer(False), block_use(BLOCK_NAMES)), max_size=5).map(
         lambda layers: [{"type": "conv2d", "name": "stem", "out_channels": 2,
                          "kernel_size": 3, "padding": 1}, *layers,
                         {"type": "flatten"}, {"type": "linear", "out_features": 10}])},
    optional={"blocks": st.one_of(blocks, st.just(GOOD_BLOCK), scalars),
              "data": st.just(CUSTOM)})
@given(graph_specs)
@settings(max_examples=150)
def test_generated_graph_specs_are_valid_or_located_errors(data):
    text = yaml.safe_dump(data, sort_keys=False)
    if _outcome(text) == "ok":
        _runs(text)


good_uses = st.fixed_dictionaries(
    {"block": st.just("basic")},
    optional={"name": st.sampled_from(["layer1", "layer2", "b"]),
              "repeat": st.sampled_from([1, 2, 3, 0]),
              "with": st.sampled_from([{}, {"ch": 2}, {"ch": 3}]),
              "inputs": st.sampled_from([["stem"], ["input"], ["layer1"]])})


def _runs(text):
    """A valid graph spec compiles, and a forward and backward pass give finite numbers."""
    import numpy as np

    spec = netspec.loads(text, "gen.yaml")
    plan = netspec.compile(spec, "float64")
    x = np.random.default_rng(0).standard_normal((2, *spec.input.shape))
    out = plan.forward(x, train=True)
    assert out.shape == (2, 10)
    loss, dout = spec.loss(out, np.array([1, 2]))
    plan.backward(dout)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in plan.grads.values())


@given(st.lists(good_uses, min_size=1, max_size=3), st.booleans())
@settings(max_examples=60)
def test_uses_of_a_good_block_are_valid_or_located_errors(uses, join):
    # one well-formed block, so that repeat, with and inputs of its uses get exercised
    layers = [{"type": "conv2d", "name": "stem", "out_channels": 2, "kernel_size": 3,
               "padding": 1}, *uses]
    if join:  # the last output joined with the stem's
        layers.append({"type": "concat", "inputs": [layers[-1].get("name", "basic1"), "stem"]})
    data = {"input": {"shape": [1, 8, 8]}, "data": CUSTOM, "blocks": GOOD_BLOCK,
            "layers": [*layers, {"type": "flatten"}, {"type": "linear", "out_features": 10}]}
    text = yaml.safe_dump(data, sort_keys=False)
    if _outcome(text) == "ok":
        _runs(text)


@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
@settings(max_examples=100)
def test_arbitrary_mappings_are_valid_or_errors(data):
    _outcome(yaml.safe_dump(data))


# ------------------------------------------------------------------ --set

key_paths = st.one_of(
    st.lists(st.sampled_from(KEYS + ["layers[0]", "layers[-1]", "layers[9]", "0"]),
             min_size=1, max_size=4).map(".".join),
    st.text(string.printable, max_size=12))
set_values = st.one_of(st.sampled_from(["1", "0", "-1", "1e12", "1.0", "abc", "[1, 2]",
                                        "{type: relu}", "null", "", "true", "[", "{", "&a *a",
                                        "!!python/object:os.system", "1e-4", ".inf", "010"]),
                       st.text(max_size=10))


@given(st.lists(st.one_of(st.tuples(key_paths, set_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
                          st.text(max_size=12)), max_size=3))
@settings(max_examples=200)
def test_set_overrides_are_applied_or_refused(overrides):
    _outcome(VALID, overrides)


# ------------------------------------------------------------------ the command line

COMMANDS = ["validate", "gradcheck", "schema", "train", "eval", "bench", "draw", "export",
            "report"]
# Paths that rich would read as markup, with spaces and Unicode: printed literally, or refused.
ODD_PATHS = ["sp [x] ü.yaml", "[red]r[/]", "ü [/]x", "a b[/]", "x\\[b]", "[bold]ö.json"]
OPTIONS = ["--set", "--out", "-o", "--workers", "--quiet", "--checkpoint", "--split",
           "--dtype", "--batch-size", "--repeats", "--resume", "--data-dir", "--no-progress",
           "--no-layers", "-q", "-c", "-b"]
ARGS = ["spec.yaml", "bad.yaml", "missing.yaml", "dir", "run", "afile", "afile/x",
        "/proc/netspec-x", "0", "1", "2", "99", "auto", "-1", "float64", "float16", "test",
        "val", "train.epochs=1", "train.epochs=0", "layers[0].out_channels=1e12",
        "train.batch_size=1000", "data.validation=1.0", "x" * 300, "", "--", "-", *ODD_PATHS]


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory() as tmp:
        yield tmp


VALUES = {"--set": ["train.epochs=0", "layers[0].out_channels=1e12", "train.batch_size=1000",
                    "data.validation=1.0", "layers[0].name=ä", "input.shape=[28, 28, 1]",
                    "seed=1", "nope", "train.epochs=1", "train.batch_size=511",
                    "layers[1]={type: batchnorm}", "layers[1].repeat=1000000000",
                    "layers[1].repeat=3", "blocks.basic.params.ch=3", "layers[1].with.ch=x",
                    "layers[2].inputs=[stem, stem]"],
          "--out": ["run", "dir", "afile", "afile/x", "/proc/netspec-x", "x" * 300, ".",
                    "newrun", "run [1] ü", "[red]r[/]x", "new dir/"],
          "-o": ["s.json", "afile/x", "dir", "/proc/netspec-x", "x" * 300, "/dev/null",
                 "[red]s[/] ü.json", "o [1]/x.svg", "m[/]x.onnx", "out dir/", "a b.png",
                 "[red]o[/]x ü.svg", "[b]m.onnx"],
          "--workers": ["1", "2", "99", "0", "auto", "x"],
          "--checkpoint": ["afile", "missing.npz", "dir", "spec.yaml", "c [1] ü.npz"],
          "-c": ["afile", "run/checkpoints/last.npz", "corrupt.npz"],
          "--split": ["test", "val", "x"], "--dtype": ["float64", "float16"],
          "--batch-size": ["1", "0", "100000"], "-b": ["4"], "--repeats": ["1", "0"],
          "--resume": ["run", "dir", "afile", "missing"],
          "--data-dir": ["dir", "afile", "missing", "/proc", "[red]d[/] ü"], "--layers": [],
          "--no-layers": [], "--quiet": [], "-q": [], "--no-eval": [], "--collapse": []}
FOR = {"validate": ["--quiet", "-q"], "schema": ["-o"], "gradcheck": ["--no-layers", "--layers"],
       "train": ["--set", "--out", "--workers", "--resume", "--data-dir"],
       "eval": ["--checkpoint", "-c", "--split", "--set", "--workers", "--data-dir"],
       "bench": ["-b", "--repeats", "--dtype", "--set"], "draw": ["-o", "--set", "--collapse"],
       "export": ["-o", "--checkpoint", "--set", "--data-dir"],
       "report": ["--no-eval", "--data-dir"]}


def command_lines(command):
    options = st.sampled_from(FOR[command]).flatmap(
        lambda option: st.sampled_from(VALUES[option]).map(lambda value: [option, value])
        if VALUES[option] else st.just([option]))
    files = st.one_of(st.sampled_from([["spec.yaml"], ["graph.yaml"], ["sp [x] ü.yaml"]]),
                      st.lists(st.sampled_from(["spec.yaml", "graph.yaml", "bad.yaml",
                                                "missing.yaml", "afile", "dir",
                                                *ODD_PATHS]), max_size=2))
    if command == "schema":
        files = st.just([])
    if command == "report":
        files = st.sampled_from([["run"], ["dir"], ["[red]r[/]x"], ["afile"], ["b [1] ü"]])
    stray = st.lists(st.one_of(st.sampled_from(OPTIONS), st.sampled_from(ARGS),
                               st.text(max_size=6)), max_size=1)
    return st.tuples(files, st.lists(options, max_size=3), st.one_of(st.just([]), stray)).map(
        lambda t: [command, *t[0], *[w for pair in t[1] for w in pair], *t[2]])


@given(st.sampled_from(COMMANDS).flatmap(command_lines))
@settings(max_examples=180)
@example(["validate", "sp [x] ü.yaml"])
@example(["draw", "spec.yaml", "-o", "[red]o[/]x ü.svg"])
@example(["schema", "-o", "[bold]ö.json"])
@example(["train", "spec.yaml", "--out", "[red]r[/]x", "--workers", "1"])
def test_cli_argument_lists_exit_0_1_or_2_without_traceback(workdir, argv):
    command = argv[0]
    old = os.getcwd()
    os.chdir(workdir)
    try:
        if not os.path.exists("spec.yaml"):
            with open("spec.yaml", "w") as f:
                f.write(VALID)
            with open("graph.yaml", "w") as f:
                f.write(GRAPH)
            with open("bad.yaml", "w") as f:
                f.write("input: {shape: [1, 8, 8]}\nlayers: [{type: linear}]\n")
            with open("afile", "w") as f:
                f.write("x")
            with open("sp [x] ü.yaml", "w") as f:
                f.write(VALID)
            with open("b [1] ü", "w") as f:  # a bad spec under an odd name
                f.write("input: {shape: [1, 8, 8]}\nlayers: [{type: linear}]\n")
            os.makedirs("dir", exist_ok=True)
            with open("corrupt.npz", "wb") as f:
                f.write(b"\x93NUMPY garbage" * 10)
        if command in ("train", "sweep"):
            argv = [*argv, "--no-progress"]
        result = CliRunner().invoke(app, argv)
    finally:
        os.chdir(old)
    hypothesis.event(f"{command} exit {result.exit_code}")
    shown = f"netspec {argv}:\n{result.output}"
    assert "Traceback" not in result.output, shown
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        shown + repr(result.exception))
    assert result.exit_code in (0, 1, 2), shown
    if result.exit_code:
        assert result.output.strip(), shown
    elif command == "validate":  # exit 0 means every spec given is valid
        specs = [a for a in argv[1:] if not a.startswith("-")]
        assert specs
        for name in specs:
            netspec.load(os.path.join(workdir, name))
            assert f"ok {name}:" in result.output, shown  # the name as given, brackets and all
    if result.exit_code == 0 and command in ("draw", "schema", "export") and "-o" in argv:
        target = argv[argv.index("-o") + 1]
        assert f"wrote {target}" in result.output, shown
        assert os.path.isfile(os.path.join(workdir, target)), shown
