"""The spec language: the top-level `NetSpec` schema, loading, overrides and error mapping.

`load(path)` reads YAML (see yamlio), applies `--set` overrides, validates with pydantic and
runs shape inference, so a returned spec describes a network that can be built. Every problem
is raised as one SpecError listing `FILE:LINE:COL: key.path: message` entries.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from pathlib import Path

import yaml
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat,
                      PositiveInt, PrivateAttr, ValidationError, field_validator)

from netspec.errors import Problem, SpecError, did_you_mean
from netspec.init import InitSpec
from netspec.layers import LAYERS
from netspec.losses import CrossEntropy, Loss
from netspec.optim import SGD, OptimizerSpec
from netspec.schedules import Constant, Schedule
from netspec.yamlio import Source, format_path, load_yaml

KNOWN_DATASETS = {"mnist": ((1, 28, 28), 10), "fashion-mnist": ((1, 28, 28), 10)}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(Strict):
    shape: tuple[PositiveInt, ...] = Field(
        description="Shape of one sample: [C, H, W] for images or [D] for flat vectors.")

    @field_validator("shape")
    @classmethod
    def _rank(cls, v):
        if len(v) not in (1, 3):
            raise ValueError(f"must be [C, H, W] or [D], got {list(v)}")
        return v


class Defaults(Strict):
    init: InitSpec = Field(InitSpec(), description="Init schemes for layers that give none.")


class DataSpec(Strict):
    dataset: str = Field("mnist", description="mnist, fashion-mnist, or a directory of IDX files.")
    normalize: typing.Literal["standardize", "scale", "none"] = Field(
        "standardize", description="standardize: train mean/std; scale: 0-1; none: raw 0-255.")
    validation: NonNegativeFloat = Field(
        0, description="Hold out the last samples of the training set: a fraction below 1, "
                       "or a count.")
    num_classes: PositiveInt | None = Field(
        None, description="Classes of a custom dataset (known datasets have 10).")

    @field_validator("validation")
    @classmethod
    def _fraction_or_count(cls, v):
        if v >= 1 and v != int(v):
            raise ValueError(f"must be a fraction below 1 or a whole count, got {v}")
        return v

    @property
    def classes(self) -> int | None:
        if self.num_classes:
            return self.num_classes
        return KNOWN_DATASETS.get(self.dataset, (None, None))[1]


class TrainSpec(Strict):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = Field(1000, description="Batch size for evaluation passes.")
    optimizer: OptimizerSpec = SGD()
    schedule: Schedule = Constant()


class GradcheckSpec(Strict):
    """Central differences in float64; pass when |a - n| <= atol + rtol * |n| for every entry."""

    batch_size: PositiveInt = 2
    eps: PositiveFloat = 1e-6
    atol: NonNegativeFloat = 1e-5
    rtol: NonNegativeFloat = 1e-3
    max_entries: PositiveInt = Field(
        24, description="Entries checked per tensor (a seeded sample when the tensor is larger).")
    seed: int = 0


def _layer_union():
    members = tuple(LAYERS.values())
    return typing.Annotated[typing.Union[members], Field(discriminator="type")]


AnyLayer = _layer_union()


class NetSpec(Strict):
    """A whole network: input, layers, loss, data and training recipe."""

    name: str = Field("net", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, description="Seeds the one Generator behind init, dropout and shuffling.")
    input: InputSpec
    defaults: Defaults = Defaults()
    layers: list[AnyLayer] = Field(min_length=1)
    loss: Loss = CrossEntropy()
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    gradcheck: GradcheckSpec = GradcheckSpec()

    _source: Source | None = PrivateAttr(None)
    _infos: list | None = PrivateAttr(None)

    @property
    def source(self) -> Source:
        return self._source or Source(self.model_dump(mode="json"))

    @property
    def infos(self):
        """Per-layer LayerInfo from shape inference (computed once)."""
        if self._infos is None:
            from netspec.shapes import infer

            self._infos = infer(self)
        return self._infos

    def layer_names(self) -> list[str]:
        return [layer.name or f"{layer.type}{i}" for i, layer in enumerate(self.layers)]

    def to_yaml(self) -> str:
        """The fully resolved spec (all defaults written out) as YAML."""
        data = self.model_dump(mode="json")
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)

    def digest(self, exclude: tuple[str, ...] = ()) -> str:
        """SHA-256 of the resolved spec, minus dotted keys in `exclude` (e.g. 'train.epochs')."""
        data = self.model_dump(mode="json")
        for dotted in exclude:
            *parents, last = dotted.split(".")
            node = data
            for p in parents:
                node = node[p]
            node.pop(last, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- loading


def load(path: str | Path, overrides: typing.Iterable[str] = ()) -> NetSpec:
    """Read, validate and shape-check a spec file; raises SpecError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(f"no such file: {path}")]) from None
    except IsADirectoryError:
        raise SpecError([Problem(f"{path} is a directory; give a .yaml spec file")]) from None
    except UnicodeDecodeError as e:
        raise SpecError([Problem(f"not a UTF-8 text file ({e.reason} at byte {e.start})",
                                 file=str(path))]) from None
    except OSError as e:
        raise SpecError([Problem(f"cannot read {path}: {e.strerror}")]) from None
    return loads(text, str(path), overrides)


def loads(text: str, file: str | None = None, overrides: typing.Iterable[str] = ()) -> NetSpec:
    """Like `load`, from YAML text."""
    src = load_yaml(text, file)
    if not isinstance(src.data, dict):
        raise SpecError([src.problem((), "a spec is a mapping with keys such as input, layers, "
                                         f"loss; got a {type(src.data).__name__}")])
    for item in overrides:
        _apply_override(src, item)
    try:
        spec = NetSpec.model_validate(src.data)
    except ValidationError as e:
        raise SpecError(validation_problems(e, src)) from None
    spec._source = src
    spec.infos  # noqa: B018 -- shape inference raises SpecError for impossible networks
    return spec


def _apply_override(src: Source, item: str) -> None:
    """Apply `key.path=value` (value parsed as YAML) to the loaded data, in place."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise SpecError([Problem(f"--set expects key.path=value, got '{item}' "
                                 "(e.g. --set train.epochs=1)")])
    parts: list = []
    for token in re.findall(r"[^.\[\]]+", key.strip()):
        parts.append(int(token) if token.isdigit() else token)
    try:
        value = load_yaml(raw, "--set").data if raw.strip() else None
    except SpecError as e:
        raise SpecError([Problem(f"--set {item}: {e.problems[0].message}")]) from None
    node = src.data
    for depth, part in enumerate(parts[:-1]):
        here = format_path(tuple(parts[: depth + 1]))
        if isinstance(node, list):
            if not isinstance(part, int) or part >= len(node):
                raise SpecError([Problem(f"--set {item}: {here} is not an index of a "
                                         f"{len(node)}-item list")])
            node = node[part]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise SpecError([Problem(f"--set {item}: {format_path(tuple(parts[:depth]))} "
                                     "holds a value, not a mapping")])
    last = parts[-1]
    if isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SpecError([Problem(f"--set {item}: cannot set {format_path(tuple(parts))}")])
    for path in [p for p in src.marks if p[: len(parts)] == tuple(parts)]:
        del src.marks[path]  # the value no longer comes from the file


# ---------------------------------------------------------------- pydantic errors -> Problems

_KIND = {"layers": "layer type", "weight": "init scheme", "bias": "init scheme",
         "optimizer": "optimizer", "schedule": "schedule", "loss": "loss"}


def validation_problems(err: ValidationError, src: Source) -> list[Problem]:
    """Translate pydantic errors into located, actionable Problems (one per error)."""
    problems = []
    for e in err.errors(include_url=False):
        path = _data_path(e["loc"], src.data)
        kind, ctx, value = e["type"], e.get("ctx", {}), e.get("input")
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            noun = _KIND.get(next((p for p in reversed(path) if isinstance(p, str)), ""), "type")
            known = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
            if kind == "union_tag_not_found":
                msg = f"missing 'type'; one of: {', '.join(known)}"
            else:
                msg = (f"unknown {noun} '{ctx.get('tag')}'{did_you_mean(ctx.get('tag'), known)}; "
                       f"known: {', '.join(known)}")
                path = path + ("type",)
        elif kind == "extra_forbidden":
            allowed = _allowed_keys(path[:-1], src.data)
            msg = f"unknown key '{path[-1]}'{did_you_mean(path[-1], allowed)}"
            if path[-1] in ("in_channels", "in_features"):
                msg += "; input sizes come from shape inference, remove it"
            elif allowed:
                msg += f"; allowed: {', '.join(allowed)}"
        elif kind == "missing":
            msg = f"missing required key '{e['loc'][-1]}'"
        elif kind == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            msg = (f"got {value!r}{did_you_mean(value, choices)}; "
                   f"expected one of: {', '.join(choices)}")
        else:
            msg = e["msg"].replace("Value error, ", "").replace("Input should", "should")
            if isinstance(value, (str, int, float, bool)) and "got" not in msg:
                msg += f", got {value!r}"
            if isinstance(value, str) and re.fullmatch(r"[-+0-9.eE_]+", value):
                msg += " (a number was expected; write it without quotes)"
        problems.append(src.problem(path, msg))
    return problems


def _data_path(loc: tuple, data) -> tuple:
    """Drop pydantic's tag segments from `loc`, keeping only keys that index `data`.

    A missing key is dropped too, so its error points at the mapping that lacks it.
    """
    path, node = [], data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            continue
        path.append(part)
    return tuple(path)


def _allowed_keys(path: tuple, data) -> list[str]:
    """Field names of the schema object at `path` (used for 'did you mean')."""
    ann, node = NetSpec, data
    for part in path:
        if isinstance(part, int):
            ann = next(iter(typing.get_args(_unwrap_list(ann))), None)
        else:
            model = _model_in(ann, node)
            if model is None or part not in model.model_fields:
                return []
            ann = model.model_fields[part].annotation
        node = node[part]
    model = _model_in(ann, node)
    return [k for k in model.model_fields if k != "type"] if model else []


def _unwrap_list(ann):
    """list[X] inside Optional/Annotated -> list[X]."""
    if typing.get_origin(ann) is list:
        return ann
    for arg in typing.get_args(ann):
        found = _unwrap_list(arg)
        if found is not None:
            return found
    return None


def _model_in(ann, node):
    """The BaseModel class an annotation holds for `node` (unwrapping unions and tags)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        tag = ann.model_fields.get("type")
        if tag is None or not isinstance(node, dict) or node.get("type") == tag.default:
            return ann
        return None
    for arg in typing.get_args(ann):
        found = _model_in(arg, node)
        if found is not None:
            return found
    return None


def json_schema() -> dict:
    """JSON Schema of the spec language, for editors (yaml-language-server) and tooling."""
    schema = NetSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "netspec network spec"
    return schema
