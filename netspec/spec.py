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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from netspec.errors import Problem, SpecError, did_you_mean, suggestions
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
    union = typing.Union[members]  # noqa: UP007 -- built from the registry at runtime
    return typing.Annotated[union, Field(discriminator="type")]


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
    """Read, validate and shape-check a spec file; raises SpecError.

    `overrides` are `key.path=value` strings (the CLI's `--set`), applied before validation.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([Problem(f"no such file: {path}")]) from None
    except IsADirectoryError:
        raise SpecError([Problem(f"{path} is a directory; give a .yaml spec file")]) from None
    except OSError as e:
        raise SpecError([Problem(f"cannot read {path}: {e.strerror or e}")]) from None
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is dropped
    except UnicodeDecodeError as e:
        before = raw[:e.start]
        line, col = before.count(b"\n") + 1, e.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError([Problem(f"not a UTF-8 text file: byte 0x{raw[e.start]:02x} cannot be "
                                 "decoded; save the spec as UTF-8 text", "", str(path), line,
                                 col)]) from None
    return loads(text, str(path), overrides)


def loads(text: str, file: str | None = None, overrides: typing.Iterable[str] = ()) -> NetSpec:
    """Like `load`, from YAML text (`file` names it in messages)."""
    src = load_yaml(text, file)
    if not isinstance(src.data, dict):
        what = {type(None): "an empty document", list: "a list", str: f"the text {src.data!r}"}
        got = what.get(type(src.data), f"the value {src.data!r}")
        raise SpecError([src.problem((), "a spec is a mapping with keys such as input, layers "
                                         f"and loss; the file holds {got}")])
    problems = []
    for item in overrides:
        try:
            _apply_override(src, item)
        except SpecError as e:
            problems += e.problems
    if problems:
        raise SpecError(problems)
    try:
        spec = _validated(src.data)
    except ValidationError as e:
        problems = validation_problems(e, src) + _shape_problems_despite(e, src)
        raise SpecError(_in_order(problems, src)) from None
    spec._source = src
    spec.infos  # noqa: B018 -- shape inference raises SpecError for impossible networks
    return spec


def _validated(data: dict) -> NetSpec:
    """Strict validation: no string, bool or float is taken for an int, no string for a float.

    It goes through JSON because strict JSON validation still reads lists as tuples (shape,
    kernel_size, betas), which strict Python validation refuses. The data is plain YAML values
    with string keys and finite floats, so the round trip is exact.
    """
    return NetSpec.model_validate_json(json.dumps(data), strict=True)


def _shape_problems_despite(err: ValidationError, src: Source) -> list[Problem]:
    """Shape-inference problems, when the validation errors lie only in sections that cannot
    change shapes (train, gradcheck, ...): those are independent and reported together."""
    locs = [e["loc"] for e in err.errors()]
    bad = {loc[0] for loc in locs if loc}
    if not all(locs) or bad & {"input", "layers", "data", "loss"}:
        return []
    try:
        spec = _validated({k: v for k, v in src.data.items() if k not in bad})
    except ValidationError:
        return []
    spec._source = src
    try:
        spec.infos  # noqa: B018
    except SpecError as e:
        return e.problems
    return []


_KEY_PATH = re.compile(r"[^.\[\]=]+(?:\.[^.\[\]=]+|\[-?\d+\])*")


def _apply_override(src: Source, item: str) -> None:
    """Apply `key.path=value` (value parsed as YAML) to the loaded data, in place.

    Paths use dots for keys and `[i]` (or `.i`) for list items; `[-1]` is the last item. A
    problem later found in the value points at this option instead of the file.
    """
    option = f"--set {item}"
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not _KEY_PATH.fullmatch(key):
        raise SpecError([Problem("expected key.path=value, e.g. --set train.epochs=1 or "
                                 "--set layers[0].out_channels=8", "", option)])
    parts: list = []
    for token in re.findall(r"\[(-?\d+)\]|([^.\[\]]+)", key):
        index, name = token
        parts.append(int(index) if index else int(name) if name.isdigit() else name)
    try:
        value = load_yaml(raw, option).data if raw.strip() else None
    except SpecError as e:
        raise SpecError([Problem(f"cannot read the value {raw!r}: {e.problems[0].message}", "",
                                 option)]) from None

    def fail(message):
        raise SpecError([Problem(message, "", option)])

    node, done, created = src.data, [], None  # done: the normalised path walked so far
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        here = format_path(tuple(done), src.data) or "the spec"
        if isinstance(node, list):
            if not isinstance(part, int) or not -len(node) <= part < len(node):
                fail(f"{here} is a list of {len(node)} items, so [{part}] is not in it "
                     f"(use [0] to [{len(node) - 1}], or [-1] for the last)")
            part %= len(node)
        elif isinstance(node, dict):
            part = str(part)  # `layers.0` on a mapping means the key "0"
            if part not in node and not last:
                node[part] = {}
                created = created or tuple(done) + (part,)
        else:
            fail(f"{here} holds the value {node!r}, so it has no '{part}' inside")
        done.append(part)
        if last:
            node[part] = value
        else:
            node = node[part]
    done = tuple(done)
    for path in [p for p in src.marks if p[: len(done)] == done and p != done]:
        del src.marks[path]  # the value no longer comes from the file (keep the key's line)
    src.overrides[created or done] = option


# ---------------------------------------------------------------- pydantic errors -> Problems

_KIND = {"layers": "layer type", "weight": "init scheme", "bias": "init scheme",
         "optimizer": "optimizer", "schedule": "schedule", "loss": "loss"}

# Hints for unknown type names that are not typos but a misunderstanding.
_TYPE_HINTS = {
    "softmax": "cross_entropy applies softmax itself; end the network with the linear layer "
               "that gives the class scores",
    "log_softmax": "cross_entropy applies log-softmax itself; end the network with the linear "
                   "layer that gives the class scores",
    "input": "the input is not a layer; give its shape as input: {shape: [C, H, W]}",
}
# Examples for list-valued keys.
_LIST_EXAMPLES = {"shape": "[1, 28, 28]", "milestones": "[10, 20]", "betas": "[0.9, 0.999]"}
# Examples for required top-level keys.
_MISSING_HINTS = {
    "input": " (e.g. input: {shape: [1, 28, 28]})",
    "layers": " (a list such as layers: [{type: flatten}, {type: linear, out_features: 10}])",
}


def validation_problems(err: ValidationError, src: Source) -> list[Problem]:
    """Translate pydantic errors into located, actionable Problems (one per independent error).

    A 'missing key' error is dropped when a misspelt key beside it is reported with the
    missing key as its suggestion.
    """
    errors = err.errors(include_url=False)
    missing = {}  # mapping path -> missing keys
    for e in errors:
        if e["type"] == "missing":
            missing.setdefault(_data_path(e["loc"], src.data), set()).add(e["loc"][-1])
    extras = {i: _extra_problem(_data_path(e["loc"], src.data), src, missing)
              for i, e in enumerate(errors) if e["type"] == "extra_forbidden"}
    problems = []
    for i, e in enumerate(errors):
        path = _data_path(e["loc"], src.data)
        kind, ctx, value = e["type"], e.get("ctx") or {}, e.get("input")
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            path, msg = _tag_problem(path, e, src)
        elif i in extras:
            path, msg = extras[i]
        elif kind == "missing" and isinstance(e["loc"][-1], int):  # a tuple too short
            msg = f"too few items: got {value!r}, item [{e['loc'][-1]}] is missing"
        elif kind == "missing":
            key = e["loc"][-1]
            if key not in missing.get(path, ()):
                continue  # explained by a misspelt key next to it
            msg = f"missing required key '{key}'" + (_MISSING_HINTS.get(key, "") if not path
                                                     else "")
        elif kind == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            msg = (f"unknown value {value!r}{did_you_mean(value, choices)}; "
                   f"expected one of: {', '.join(choices)}")
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            msg = _mapping_expected(path, value)
        else:
            path, msg = _value_problem(path, e, src)
        problems.append(src.problem(path, msg))
    return _in_order(problems, src)


def _in_order(problems: list[Problem], src: Source) -> list[Problem]:
    """Unique problems in file order; those from `--set` options last."""
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.file != src.file, p.line or 0, p.col or 0))


def _tag_problem(path: tuple, e: dict, src: Source) -> tuple[tuple, str]:
    """Unknown or missing `type` in a tagged union (layer, init scheme, optimizer, ...)."""
    noun = _KIND.get(next((p for p in reversed(path) if isinstance(p, str)), ""), "type")
    known = _union_tags(_annotation_at(path, src.data)) or re.findall(
        r"'([^']*)'", str((e.get("ctx") or {}).get("expected_tags", "")))
    if e["type"] == "union_tag_not_found":
        return path, f"missing 'type'; give one of: {', '.join(known)}"
    tag = (e.get("ctx") or {}).get("tag")
    node = _node_at(path, src.data)
    if isinstance(node, dict) and "type" in node:
        path = path + ("type",)
    msg = f"unknown {noun} '{tag}'{did_you_mean(tag, known)}"
    if tag in _TYPE_HINTS and noun == "layer type":
        msg += f"; {_TYPE_HINTS[tag]}"
    return path, f"{msg}; known: {', '.join(known)}"


def _extra_problem(path: tuple, src: Source, missing: dict) -> tuple[tuple, str]:
    """An unknown key: suggest the intended one, or say where it belongs."""
    key, parent = path[-1], path[:-1]
    if key in ("in_channels", "in_features"):
        return path, (f"'{key}' is not written in a spec: shape inference takes it from the "
                      "previous layer's output (or input.shape); remove it")
    allowed = _allowed_keys(parent, src.data)
    close = suggestions(key, allowed)
    if close and close[0] in missing.get(parent, ()):
        missing[parent].discard(close[0])  # the misspelling explains the missing key
        return path, f"unknown key '{key}' (did you mean '{close[0]}'?)"
    msg = f"unknown key '{key}'{did_you_mean(key, allowed)}"
    if not close:
        elsewhere = _key_elsewhere(key)
        if elsewhere and elsewhere != path:
            msg += (f"; it belongs under {'.'.join(elsewhere[:-1])} "
                    f"(write it as {'.'.join(elsewhere)})")
        elif allowed:
            msg += f"; allowed here: {', '.join(allowed)}"
    return path, msg


def _mapping_expected(path: tuple, value) -> str:
    """A scalar or list where a mapping belongs (a layer written as `- relu`, `train: 5`)."""
    if isinstance(value, str) and path[:1] == ("layers",) and suggestions(value, LAYERS):
        meant = value if value in LAYERS else suggestions(value, LAYERS)[0]
        return f"a layer is a mapping; write {{type: {meant}}} instead of '{value}'"
    if isinstance(value, str) and len(path) >= 1 and path[-1] in ("loss", "optimizer", "schedule"):
        return f"should be a mapping such as {{type: {value}}}, got {value!r}"
    if path[:1] == ("layers",) and len(path) == 2:
        return f"a layer is a mapping such as {{type: relu}}; got {value!r}"
    if path == ("input",) and isinstance(value, list):
        return f"should be a mapping; write input: {{shape: {value}}}"
    return f"should be a mapping (key: value pairs), got {value!r}"


def _value_problem(path: tuple, e: dict, src: Source) -> tuple[tuple, str]:
    """Type and range errors, and the messages of the schema's own validators."""
    kind, value = e["type"], e.get("input")
    msg = e["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    msg = msg.replace("Input should", "should")
    if kind in ("value_error", "assertion_error") and isinstance(value, dict):
        first = re.match(r"\w+", msg)  # "padding 'same' needs ..." is about the padding key
        if first and first.group() in value:
            path = path + (first.group(),)
    number = isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9._]*[0-9][0-9._]*"
                                                     r"([eE][-+]?[0-9]+)?\s*", value)
    if isinstance(value, bool) and kind in ("int_type", "float_type"):
        msg = (f"should be a number, got {str(value).lower()} (a boolean); "
               "write a number such as 10")
    elif kind == "int_type" and isinstance(value, float):
        whole = f"; write {int(value)}" if value.is_integer() else ""
        msg = f"should be a whole number, got {value!r}{whole}"
    elif kind in ("int_type", "float_type", "int_parsing", "float_parsing") and number:
        msg = (f"should be a number, got the quoted string {value!r}; "
               "write it without quotes")
    elif kind == "bool_type":
        msg = f"should be true or false, got {value!r}"
    elif kind == "string_type" and isinstance(value, bool):
        msg = (f"should be text, got {str(value).lower()}: YAML reads unquoted yes, no, on, off, "
               "true and false as booleans; put the text in quotes")
    elif kind in ("tuple_type", "list_type") and path == ("layers",):
        msg = ("should be a list with one item per layer, each on a line starting with '- ', "
               "e.g. - {type: linear, out_features: 10}")
    elif kind in ("tuple_type", "list_type"):
        example = _LIST_EXAMPLES.get(path[-1] if path else "", "[1, 2]")
        msg = f"should be a list such as {example}, got {value!r}"
    elif kind == "string_pattern_mismatch":
        what = ("letters, digits and '_', not starting with a digit" if "layers" in path
                else "letters, digits, '_', '.' and '-'")
        msg = f"{value!r} is not a valid name: use {what}"
    elif kind == "too_short" and path == ("layers",):
        msg = ("needs at least one layer, e.g. layers: [{type: flatten}, "
               "{type: linear, out_features: 10}]")
    elif kind in ("too_short", "too_long"):
        msg = msg.replace("List should", "should").replace(" after validation", "")
    elif isinstance(value, (str, int, float, list)) and "got" not in msg:
        msg += f", got {value!r}"
    return path, msg


def _data_path(loc: tuple, data) -> tuple:
    """Drop pydantic's tag segments from `loc`, keeping only keys that index `data`.

    A missing key is dropped too, so its error points at the mapping that lacks it.
    """
    path, node = [], data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
            path.append(part)
    return tuple(path)


def _node_at(path: tuple, data):
    for part in path:
        data = data[part]
    return data


def _annotation_at(path: tuple, data):
    """The schema annotation of the value at `path` (None when the path leaves the schema)."""
    ann, node = NetSpec, data
    for part in path:
        if isinstance(part, int):
            lst = _unwrap_list(ann)
            if lst is None:
                return None
            ann = typing.get_args(lst)[0]
        else:
            model = _model_in(ann, node)
            if model is None or part not in model.model_fields:
                return None
            ann = model.model_fields[part].annotation
        node = node[part] if isinstance(node, (dict, list)) else None
    return ann


def _allowed_keys(path: tuple, data) -> list[str]:
    """Field names of the schema object at `path` (used for 'did you mean')."""
    node = _node_at(path, data)
    model = _model_in(_annotation_at(path, data), node)
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


def _models(ann) -> list[type[BaseModel]]:
    """Every BaseModel class inside an annotation (unwrapping Optional, Union, Annotated)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for arg in typing.get_args(ann) for m in _models(arg)]


def _model_in(ann, node):
    """The BaseModel class an annotation holds for `node` (choosing a union member by type)."""
    for model in _models(ann):
        tag = model.model_fields.get("type")
        if tag is None or not isinstance(node, dict) or node.get("type") == tag.default:
            return model
    return None


def _union_tags(ann) -> list[str]:
    """The `type` names a tagged union accepts, in declaration order."""
    tags = []
    for model in _models(ann):
        tag = model.model_fields.get("type")
        if tag is not None and isinstance(tag.default, str):
            tags.append(tag.default)
    return tags


def _key_elsewhere(key: str) -> tuple | None:
    """Where a key belongs when written in the wrong section: 'epochs' -> ('train', 'epochs')."""
    queue = [((), NetSpec)]
    while queue:
        prefix, model = queue.pop(0)
        for name, info in model.model_fields.items():
            if name == key:
                return prefix + (name,)
            if name == "layers" or len(prefix) > 2:
                continue
            for sub in _models(info.annotation):
                queue.append((prefix + (name,), sub))
    return None


def json_schema() -> dict:
    """JSON Schema of the spec language, for editors (yaml-language-server) and tooling."""
    schema = NetSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "netspec network spec"
    for definition in schema.get("$defs", {}).values():
        # A member of a tagged union (layer, init scheme, optimizer, ...) must name its type,
        # as validation demands; saying so lets editors complete and check `type` first.
        tag = definition.get("properties", {}).get("type", {})
        if "const" in tag:
            required = definition.setdefault("required", [])
            if "type" not in required:
                required.insert(0, "type")
    return schema
