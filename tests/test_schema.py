"""The JSON Schema (netspec.schema.json) that editors use through yaml-language-server.

It must be current, accept every spec in specs/, reject typical mistakes, and describe the
tagged unions (layers, init schemes, optimizers, schedules, losses) and the int-or-pair fields
the way the loader reads them.
"""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netspec.cli import app
from netspec.nn.layers import LAYERS
from netspec.spec.schema import json_schema
from netspec.spec.yamlio import load_yaml

jsonschema = pytest.importorskip("jsonschema", reason="the schema tests need jsonschema")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCHEMA_FILE = ROOT / "netspec.schema.json"
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
REGENERATE = "regenerate it with: netspec schema -o netspec.schema.json"


@pytest.fixture(scope="module")
def schema():
    return json_schema()


@pytest.fixture(scope="module")
def validator(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def spec_data(path: Path):
    return load_yaml(path.read_text(encoding="utf-8"), str(path)).data


def lenet():
    return spec_data(ROOT / "specs" / "lenet.yaml")


def test_committed_schema_is_current(schema):
    assert SCHEMA_FILE.exists(), f"netspec.schema.json is missing; {REGENERATE}"
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == schema, f"netspec.schema.json is out of date; {REGENERATE}"


def test_cli_prints_the_same_schema(schema):
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output) == schema
    assert result.output == SCHEMA_FILE.read_text(encoding="utf-8"), REGENERATE


def test_cli_writes_the_schema(tmp_path, schema):
    out = tmp_path / "s.json"
    result = CliRunner().invoke(app, ["schema", "-o", str(out)])
    assert result.exit_code == 0 and json.loads(out.read_text()) == schema


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_spec_validates(validator, path):
    errors = [e.message for e in validator.iter_errors(spec_data(path))]
    assert not errors, errors


def test_specs_point_editors_at_the_schema():
    for path in SPECS:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../netspec.schema.json", path.name


# Corpus files whose mistake the schema can see (structure and types, not shapes).
SCHEMA_VISIBLE = [
    "unknown_key_typo", "unknown_layer_type", "layer_type_alias",
    "unknown_init_scheme", "unknown_init_key", "init_constant_without_value",
    "unknown_optimizer", "unknown_schedule", "unknown_loss", "unknown_normalize",
    "in_channels", "in_features", "quoted_float", "bool_as_int", "int_as_bool",
    "string_for_int", "float_for_int", "negative_size", "zero_kernel", "kernel_pair_length",
    "layer_not_mapping", "empty_layers", "missing_layers", "missing_input", "missing_type",
    "missing_required", "multiple_errors", "key_in_wrong_section", "too_few_betas",
    "top_level_list", "shape_and_optimizer", "bad_layer_name", "layers_not_a_list", "input_as_list",
    "boolean_as_text",
]
# Corpus files that are well-formed and only wrong in ways that need shape inference.
SHAPE_ONLY = ["kernel_too_large", "pool_leaves_nothing", "linear_needs_flatten",
              "conv_after_flatten", "wrong_num_classes", "network_ends_unflat",
              "input_shape_mismatch", "duplicate_layer_name", "graph_unknown_input",
              "graph_forward_reference", "graph_add_shapes", "graph_concat_shapes",
              "softmax_layer"]


@pytest.mark.parametrize("name", SCHEMA_VISIBLE)
def test_schema_rejects_bad_spec(validator, name):
    assert not validator.is_valid(spec_data(HERE / "bad_specs" / f"{name}.yaml"))


@pytest.mark.parametrize("name", SHAPE_ONLY)
def test_schema_accepts_well_formed_spec(validator, name):
    errors = [e.message for e in validator.iter_errors(
        spec_data(HERE / "bad_specs" / f"{name}.yaml"))]
    assert not errors, errors


# ---------------------------------------------------------------- tagged unions


def members(union: dict, schema: dict) -> dict[str, dict]:
    """type tag -> member definition of a oneOf/discriminator union."""
    assert union["discriminator"]["propertyName"] == "type"
    out = {}
    for ref in union["oneOf"]:
        definition = schema["$defs"][ref["$ref"].split("/")[-1]]
        out[definition["properties"]["type"]["const"]] = definition
    assert set(out) == set(union["discriminator"]["mapping"])
    return out


def union_of(node: dict) -> dict:
    """The discriminated union inside `node` (which may be wrapped in anyOf for null)."""
    if "oneOf" in node:
        return node
    return next(n for n in node["anyOf"] if "oneOf" in n)


def test_layers_are_a_union_on_type(schema):
    layers = members(union_of(schema["properties"]["layers"]["items"]), schema)
    assert set(layers) == set(LAYERS)
    for tag, definition in layers.items():
        assert definition["required"][0] == "type", tag  # editors complete `type` first
        assert definition["additionalProperties"] is False, tag
        assert "in_channels" not in definition["properties"]
        assert "in_features" not in definition["properties"]


@pytest.mark.parametrize("where, tags", [
    (("TrainSpec", "optimizer"), {"sgd", "adam", "adamw"}),
    (("TrainSpec", "schedule"), {"constant", "step", "multistep", "exponential", "cosine"}),
])
def test_training_unions(schema, where, tags):
    definition, field = where
    assert set(members(union_of(schema["$defs"][definition]["properties"][field]),
                       schema)) == tags


def test_loss_union(schema):
    assert set(members(union_of(schema["properties"]["loss"]), schema)) == {"cross_entropy",
                                                                               "mse", "nll"}


def test_init_scheme_takes_a_bare_name_or_a_mapping(schema, validator):
    weight = schema["$defs"]["InitSpec"]["properties"]["weight"]
    names = next(n for n in weight["anyOf"] if n.get("type") == "string")
    assert "kaiming_normal" in names["enum"] and "constant" not in names["enum"]  # needs value
    assert "xavier_uniform" in members(union_of(weight), schema)
    good = [
        {"weight": "kaiming_normal", "bias": "zeros"},
        {"weight": {"type": "normal", "std": 0.01}, "bias": {"type": "constant", "value": 0.1}},
        {"weight": {"type": "kaiming_uniform", "mode": "fan_out"}},
        {},
    ]
    for init in good:
        data = lenet()
        data["defaults"]["init"] = init
        data["layers"][0]["init"] = init
        assert validator.is_valid(data), init
    bad = [{"weight": "kaiming_norml"}, {"weight": "constant"}, {"weight": {"std": 0.1}},
           {"weight": {"type": "normal", "stdd": 0.1}}, {"weight": 3}, {"bais": "zeros"}]
    for init in bad:
        data = lenet()
        data["defaults"]["init"] = init
        assert not validator.is_valid(data), init


@pytest.mark.parametrize("field, value, valid", [
    ("kernel_size", 3, True), ("kernel_size", [3, 2], True), ("kernel_size", [3], False),
    ("kernel_size", [3, 3, 3], False), ("kernel_size", 0, False), ("kernel_size", "3", False),
    ("kernel_size", True, False), ("stride", [2, 1], True), ("padding", 0, True),
    ("padding", [1, 0], True), ("padding", "same", True), ("padding", "valid", True),
    ("padding", "sam", False), ("padding", -1, False), ("dilation", 2, True),
])
def test_int_or_pair_fields(validator, field, value, valid):
    data = lenet()
    data["layers"][0][field] = value  # conv1
    assert validator.is_valid(data) is valid


def test_numbers_are_strict_like_the_loader(validator):
    for path, value in [(("train", "epochs"), "3"), (("train", "epochs"), 2.5),
                        (("train", "epochs"), True), (("train", "optimizer", "lr"), "1e-4"),
                        (("layers", 7, "bias"), 1), (("seed",), "0")]:
        data = lenet()
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        assert not validator.is_valid(data), (path, value)
    data = lenet()
    data["train"]["optimizer"]["lr"] = 1  # an int is a valid number
    assert validator.is_valid(data)


# ---------------------------------------------------------------- graphs: blocks and inputs


def test_editors_complete_block_inputs_and_with(schema):
    items = schema["properties"]["layers"]["items"]["anyOf"]
    use = schema["$defs"][next(m["$ref"] for m in items if "$ref" in m).split("/")[-1]]
    assert {"block", "name", "repeat", "with", "inputs"} == set(use["properties"])
    assert use["required"] == ["block"] and use["additionalProperties"] is False
    for tag, definition in members(union_of({"anyOf": items}), schema).items():
        assert "inputs" in definition["properties"], tag
    assert "blocks" in schema["properties"]


def test_schema_checks_graph_specs(validator):
    data = spec_data(ROOT / "specs" / "resnet-mini.yaml")
    assert validator.is_valid(data)
    typo = json.loads(json.dumps(data))
    typo["layers"][3]["witth"] = typo["layers"][3].pop("repeat")  # a block use's key misspelt
    assert not validator.is_valid(typo)
    param = json.loads(json.dumps(data))
    param["blocks"]["basic"]["layers"][0]["out_channels"] = "ch"  # a string, not a $parameter
    assert not validator.is_valid(param)
    param["blocks"]["basic"]["layers"][0]["out_channels"] = "$ch"
    assert validator.is_valid(param)
    param["layers"][0]["out_channels"] = "$ch"  # parameters exist only inside blocks
    assert not validator.is_valid(param)
