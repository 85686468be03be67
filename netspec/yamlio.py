"""Safe YAML loading that remembers where every key came from.

`load_yaml(text, file)` returns a `Source`: the plain data (dicts, lists, scalars) plus a map
from key paths such as ("layers", 3, "out_features") to (line, col), so that any later error,
from pydantic or from shape inference, can point at the offending line.

Safety rules: only plain YAML tags are accepted (a `!!python/...` tag is an error and is never
executed), duplicate keys are an error, and alias expansion is capped so that a "billion laughs"
document fails fast. Floats follow YAML 1.2, so `1e-4` is the number 0.0001, not a string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from netspec.errors import Problem, SpecError

Path = tuple  # a key path: str keys and int list indices, e.g. ("layers", 3, "type")

MAX_NODES = 100_000  # more nodes than any real spec has; stops alias bombs early

_PLAIN_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "seq", "map")
}


class _Loader(yaml.SafeLoader):
    """SafeLoader whose float rule also matches `1e-4` and `1E+3` (YAML 1.2 floats)."""


_Loader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@dataclass
class Source:
    """Loaded YAML data plus the (line, col) of every key and list item."""

    data: object
    file: str | None = None
    marks: dict = field(default_factory=dict)  # Path -> (line, col), 1-based

    def locate(self, path: Path) -> tuple[int | None, int | None]:
        """Line and column of the deepest prefix of `path` that exists in the file."""
        path = tuple(path)
        while path and path not in self.marks:
            path = path[:-1]
        return self.marks.get(path, (None, None))

    def problem(self, path: Path, message: str) -> Problem:
        line, col = self.locate(path)
        return Problem(message, format_path(path, self.data), self.file, line, col)


def format_path(path: Path, data: object = None) -> str:
    """("layers", 3, "out_features") -> "layers[3] (linear).out_features"."""
    out = ""
    node = data
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("type"), str):
                out += f" ({node['type']})"
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def load_yaml(text: str, file: str | None = None) -> Source:
    """Parse YAML text into a Source; raises SpecError with file:line:col on any problem."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        msg = " ".join(str(m) for m in (e.context, e.problem) if m)
        raise SpecError([Problem(f"malformed YAML: {msg}", "", file, line, col)]) from None
    except yaml.YAMLError as e:
        raise SpecError([Problem(f"malformed YAML: {e}", "", file)]) from None
    finally:
        loader.dispose()
    if root is None:
        raise SpecError([Problem("the file is empty; a spec is a mapping with 'layers'", "", file)])
    marks: dict = {}
    budget = [MAX_NODES]
    data = _construct(loader, root, (), marks, budget, file)
    return Source(data, file, marks)


def _construct(loader, node, path, marks, budget, file):
    """Build plain Python data from a YAML node, recording marks and enforcing the rules."""
    budget[0] -= 1
    if budget[0] < 0:
        raise SpecError(
            [Problem(f"the document expands to more than {MAX_NODES} values; "
                     "is an alias (*name) repeated recursively?", "", file)]
        )
    here = (node.start_mark.line + 1, node.start_mark.column + 1)
    marks.setdefault(path, here)
    if node.tag not in _PLAIN_TAGS:
        raise SpecError(
            [Problem(f"YAML tag '{node.tag}' is not allowed: a spec holds plain data only",
                     format_path(path), file, *here)]
        )
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_object(node)
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, child, path + (i,), marks, budget, file)
            for i, child in enumerate(node.value)
        ]
    loader.flatten_mapping(node)  # resolve `<<: *base` merge keys
    out: dict = {}
    for key_node, value_node in node.value:
        key_here = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        if not isinstance(key_node, yaml.ScalarNode):
            raise SpecError([Problem("mapping keys must be plain words", format_path(path),
                                     file, *key_here)])
        key = loader.construct_object(key_node)
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise SpecError([Problem(f"invalid key {key!r}", format_path(path), file, *key_here)])
        if key in out:
            first = marks.get(path + (key,), (None, None))[0]
            raise SpecError(
                [Problem(f"duplicate key '{key}' (first defined on line {first}); "
                         "keep one of them", format_path(path + (key,)), file, *key_here)]
            )
        marks[path + (key,)] = key_here
        out[key] = _construct(loader, value_node, path + (key,), marks, budget, file)
        marks[path + (key,)] = key_here  # the key's own line, not its value's
    return out
