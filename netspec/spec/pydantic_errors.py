"""Pydantic's validation errors, translated into located, actionable Problems.

`validation_problems(err, src, root)` turns each independent error into one `Problem` at the
YAML line of the offending key, with a "did you mean" for misspelt keys and type names, an
example for list-valued keys, and a hint where a key belongs to another section. `root` is the
top-level schema (`NetSpec`), walked to find the allowed keys at a path.
"""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel, ValidationError

from netspec.errors import Problem, did_you_mean, suggestions
from netspec.nn.layers import LAYERS
from netspec.spec.yamlio import Source

_KIND = {"layers": "layer type", "weight": "init scheme", "bias": "init scheme",
         "optimizer": "optimizer", "schedule": "schedule", "loss": "loss"}

# Hints for unknown type names that are not typos but a misunderstanding.
_TYPE_HINTS = {
    "input": "the input is not a layer; give its shape as input: {shape: [C, H, W]}",
}
# Examples for list-valued keys.
_LIST_EXAMPLES = {"shape": "[1, 28, 28]", "milestones": "[10, 20]", "betas": "[0.9, 0.999]"}
# Examples for required top-level keys.
_MISSING_HINTS = {
    "input": " (e.g. input: {shape: [1, 28, 28]})",
    "layers": " (a list such as layers: [{type: flatten}, {type: linear, out_features: 10}])",
}


MAX_WHOLE = 2**31 - 1  # a whole number written as a float beyond this is a mistake, not a size


def validation_problems(err: ValidationError, src: Source,
                        root: type[BaseModel]) -> list[Problem]:
    """Translate pydantic errors into located, actionable Problems (one per independent error).

    A 'missing key' error is dropped when a misspelt key beside it is reported with the
    missing key as its suggestion.
    """
    errors = err.errors(include_url=False)
    missing = {}  # mapping path -> missing keys
    for e in errors:
        if e["type"] == "missing":
            missing.setdefault(_data_path(e["loc"], src.data), set()).add(e["loc"][-1])
    extras = {i: _extra_problem(_data_path(e["loc"], src.data), src, missing, root)
              for i, e in enumerate(errors) if e["type"] == "extra_forbidden"}
    problems = []
    floats = {e["loc"][:-1] for e in errors
              if e["loc"][-1:] in (("float",), ("constrained-float",))}
    for i, e in enumerate(errors):
        if e["loc"][-1:] in (("int",), ("constrained-int",)) and e["loc"][:-1] in floats:
            continue  # an `int | float` field: the float member's error says it all
        path = _data_path(e["loc"], src.data)
        kind, ctx, value = e["type"], e.get("ctx") or {}, e.get("input")
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            path, msg = _tag_problem(path, e, src, root)
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
    return in_order(problems, src)


def in_order(problems: list[Problem], src: Source) -> list[Problem]:
    """Unique problems in file order; those from `--set` options last."""
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.file != src.file, p.line or 0, p.col or 0))


def _tag_problem(path: tuple, e: dict, src: Source, root) -> tuple[tuple, str]:
    """Unknown or missing `type` in a tagged union (layer, init scheme, optimizer, ...)."""
    noun = _KIND.get(next((p for p in reversed(path) if isinstance(p, str)), ""), "type")
    known = _union_tags(_annotation_at(path, src.data, root)) or re.findall(
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


def _extra_problem(path: tuple, src: Source, missing: dict, root) -> tuple[tuple, str]:
    """An unknown key: suggest the intended one, or say where it belongs."""
    key, parent = path[-1], path[:-1]
    if key in ("in_channels", "in_features"):
        return path, (f"'{key}' is not written in a spec: shape inference takes it from the "
                      "previous layer's output (or input.shape); remove it")
    allowed = _allowed_keys(parent, src.data, root)
    close = suggestions(key, allowed)
    if close and close[0] in missing.get(parent, ()):
        missing[parent].discard(close[0])  # the misspelling explains the missing key
        return path, f"unknown key '{key}' (did you mean '{close[0]}'?)"
    msg = f"unknown key '{key}'{did_you_mean(key, allowed)}"
    if not close:
        elsewhere = _key_elsewhere(key, root)
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
    elif kind == "int_type" and isinstance(value, float) and abs(value) > MAX_WHOLE:
        msg = (f"{value:g} is too large: a size or count is at most {MAX_WHOLE:,} (2**31 - 1); "
               "use a smaller whole number")
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
    elif kind == "string_too_long":
        limit = e.get("ctx", {}).get("max_length")
        msg = (f"{_shortened(value)} is {len(value):,} characters long; a name has at most "
               f"{limit}: choose a shorter one")
    elif kind == "string_pattern_mismatch":
        what = ("ASCII letters (A-Z, a-z), digits and '_', not starting with a digit"
                if "layers" in path else "ASCII letters (A-Z, a-z), digits, '_', '.' and '-', "
                "not starting with '.' (the name makes folders: runs/<name>-<time>)")
        odd = sorted({c for c in str(value) if not c.isascii()})
        shown = f" ({', '.join(repr(c) for c in odd)} {'is' if len(odd) == 1 else 'are'} not " \
                "ASCII)" if odd else ""
        msg = f"{_shortened(value)} is not a valid name{shown}: use only {what}"
    elif kind == "too_short" and path == ("layers",):
        msg = ("needs at least one layer, e.g. layers: [{type: flatten}, "
               "{type: linear, out_features: 10}]")
    elif kind in ("too_short", "too_long"):
        msg = msg.replace("List should", "should").replace(" after validation", "")
    elif isinstance(value, (str, int, float, list)) and "got" not in msg:
        msg += f", got {value!r}"
    return path, msg


def _shortened(value, width: int = 40) -> str:
    """repr of a value, cut in the middle when long (a name of 100,000 characters is not
    quoted whole)."""
    text = repr(value)
    return text if len(text) <= width else f"{text[:width // 2]}...{text[-width // 2:]}"


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


def _annotation_at(path: tuple, data, root):
    """The schema annotation of the value at `path` (None when the path leaves the schema)."""
    ann, node = root, data
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


def _allowed_keys(path: tuple, data, root) -> list[str]:
    """Field names of the schema object at `path` (used for 'did you mean')."""
    node = _node_at(path, data)
    model = _model_in(_annotation_at(path, data, root), node)
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


def _key_elsewhere(key: str, root) -> tuple | None:
    """Where a key belongs when written in the wrong section: 'epochs' -> ('train', 'epochs')."""
    queue = [((), root)]
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
