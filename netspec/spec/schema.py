"""The JSON Schema of the spec language, for editors (yaml-language-server) and tooling.

It describes a spec file as written, before blocks are expanded: `NetSpec` plus `blocks:` and
block uses among the layers, and inside blocks layers whose fields may be `$name` parameters.
`netspec schema -o netspec.schema.json` writes it; tests/test_schema.py keeps the file current.
"""

from __future__ import annotations

import copy
import typing

from pydantic import Field, NonNegativeInt, PositiveInt

from netspec.spec.blocks import NAME
from netspec.spec.model import AnyLayer, NetSpec, Strict


class BlockUse(Strict):
    """Copies of a block's layers here (see blocks.py); the block's name means its output."""

    block: str = Field(description="Name of a block defined under `blocks`.")
    name: typing.Annotated[str, Field(pattern=NAME.pattern)] | NonNegativeInt | None = Field(
        None, description=(
            "Prefix of the block's layer names: layer1 -> layer1.conv1 (with repeat: "
            "layer1.0.conv1, layer1.1.conv1, ...); defaults to <block><index>. Inside a block "
            "it may be a number, as nn.Sequential numbers its children (layer1.0.conv1)."))
    repeat: PositiveInt | None = Field(None, description="Chain this many copies.")
    with_: dict[str, typing.Any] = Field({}, alias="with",
                                         description="Values of the block's params.")
    inputs: list[str] | None = Field(None, min_length=1, max_length=1, description=(
        "The one layer or block whose output is the block's `in`; default: the layer above."))


class BlockSpec(Strict):
    """A reusable group of layers; inside it `in` is its input and `$name` a parameter."""

    params: dict[str, typing.Any] = Field({}, description=(
        "Parameters and their defaults (null: required at each use); `$name` in the layers "
        "is replaced by the value."))
    layers: list[typing.Any] = Field(min_length=1, description="The block's layers.")


class _Authored(NetSpec):
    """What a spec file may hold before blocks are expanded (only for the JSON Schema)."""

    blocks: dict[str, BlockSpec] = Field({}, description="Reusable blocks, by name.")
    layers: list[AnyLayer | BlockUse] = Field(min_length=1)


TITLE = "netspec network spec"  # the schema's title: how `netspec schema -o` knows its own file


def written_by_netspec(text: str) -> bool:
    """Whether `text` is a JSON Schema that `netspec schema` wrote (any version of it)."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return False
    return (isinstance(data, dict) and data.get("title") == TITLE
            and "$schema" in data and isinstance(data.get("$defs"), dict)
            and "layers" in data.get("properties", {}))


def json_schema() -> dict:
    """The schema as a JSON-ready dict."""
    schema = _Authored.model_json_schema(by_alias=True)
    schema["title"] = "NetSpec"
    schema.pop("description", None)
    schema["description"] = NetSpec.__doc__
    _block_layers(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = TITLE
    for definition in schema.get("$defs", {}).values():
        # A member of a tagged union (layer, init scheme, optimizer, ...) must name its type,
        # as validation demands; saying so lets editors complete and check `type` first.
        tag = definition.get("properties", {}).get("type", {})
        if "const" in tag:
            required = definition.setdefault("required", [])
            if "type" not in required:
                required.insert(0, "type")
    return schema


def _block_layers(schema: dict) -> None:
    """Inside a block any layer field may be a `$name` parameter: there the layer union refers
    to copies of the layer definitions that also accept '$name' strings."""
    defs = schema["$defs"]
    items = schema["properties"]["layers"]["items"]
    union = next(m for m in items["anyOf"] if "discriminator" in m)
    defs["Param"] = {"type": "string", "pattern": r"^\$" + NAME.pattern[1:],  # blocks.PARAM
                     "description": "A parameter of the enclosing block, e.g. $ch."}
    loose = copy.deepcopy(union)
    for tag, ref in union["discriminator"]["mapping"].items():
        name = ref.rsplit("/", 1)[-1]
        layer = copy.deepcopy(defs[name])
        for key, prop in layer["properties"].items():
            if key not in ("type", "name", "inputs"):
                layer["properties"][key] = {"anyOf": [prop, {"$ref": "#/$defs/Param"}],
                                            **{k: prop[k] for k in ("description", "title")
                                               if k in prop}}
        defs[f"Block{name}"] = layer
        loose["discriminator"]["mapping"][tag] = f"#/$defs/Block{name}"
    loose["oneOf"] = [{"$ref": ref} for ref in loose["discriminator"]["mapping"].values()]
    defs["BlockSpec"]["properties"]["layers"]["items"] = {
        "anyOf": [loose, {"$ref": "#/$defs/BlockUse"}]}
