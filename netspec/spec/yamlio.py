"""Safe YAML loading that remembers where every key came from.

`load_yaml(text, file)` returns a `Source`: the plain data (dicts, lists, scalars) plus a map
from key paths such as ("layers", 3, "out_features") to (line, col), so that any later error,
from pydantic or from shape inference, can point at the offending line.

Safety rules: only plain YAML tags are accepted (a `!!python/...` tag is an error and is never
executed), duplicate keys are an error, and alias expansion is capped (in values and in nesting
depth) so that a "billion laughs" or self-referencing document fails fast.

Numbers: floats follow YAML 1.2, so `1e-4` is the number 0.0001, not a string; the forms only
YAML 1.1 has (`010` octal, `0b11`, `1:30` base 60) are refused rather than silently misread, as
are integers beyond int64 and `.inf`/`.nan`. Mapping keys are always strings (`1:` is "1").
Problems found while building the data (duplicate keys, tags, numbers) are collected and raised
together.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import yaml

from netspec.errors import Problem, SpecError

Path = tuple  # a key path: str keys and int list indices, e.g. ("layers", 3, "type")

MAX_NODES = 100_000  # more values than any real spec has; stops alias bombs early
MAX_DEPTH = 64  # nesting deeper than this is a mistake (or a recursive alias)
MAX_INT = 2**63 - 1  # larger integers are typos; they would overflow the size arithmetic

_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map")}


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


# Number forms only YAML 1.1 has, which PyYAML reads silently and surprisingly: 010 is 8.
_YAML11_NUMBERS = [
    ("octal", re.compile(r"[-+]?0[0-7_]*[0-7][0-7_]*")),
    ("binary", re.compile(r"[-+]?0b[01_]+")),
    ("base-60", re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")),
]


@dataclass
class Source:
    """Loaded YAML data plus the (line, col) of every key and list item.

    `overrides` maps the key paths replaced by `--set` to the option that set them, so a
    problem in an overridden value points at the option rather than at the file.
    """

    data: object
    file: str | None = None
    marks: dict = field(default_factory=dict)  # Path -> (line, col), 1-based
    overrides: dict = field(default_factory=dict)  # Path -> "--set key.path=value"

    def locate(self, path: Path) -> tuple[int | None, int | None]:
        """Line and column of the deepest prefix of `path` that exists in the file."""
        path = tuple(path)
        while path and path not in self.marks:
            path = path[:-1]
        return self.marks.get(path, (None, None))

    def origin(self, path: Path) -> str | None:
        """The `--set` option that supplied `path` (or a parent of it), if any."""
        path = tuple(path)
        for n in range(len(path), 0, -1):
            if path[:n] in self.overrides:
                return self.overrides[path[:n]]
        return None

    def problem(self, path: Path, message: str) -> Problem:
        option = self.origin(path)
        if option:
            return Problem(message, format_path(path, self.data), option)
        line, col = self.locate(path)
        return Problem(message, format_path(path, self.data), self.file, line, col)


def format_path(path: Path, data: object = None) -> str:
    """("layers", 3, "out_features") -> "layers[3] (linear 'fc1').out_features".

    A list item that is a mapping with a `type` is annotated with it (and its name, if given).
    """
    out = ""
    node = data
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and -len(node) <= part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("type"), str):
                name = node.get("name")
                if isinstance(name, str) and len(name) > 40:  # a name too long to quote whole
                    name = f"{name[:18]}...{name[-18:]}"
                named = f" '{name}'" if isinstance(name, str) and name else ""
                kind = node["type"] if len(node["type"]) <= 40 else f"{node['type'][:37]}..."
                out += f" ({kind}{named})"
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def load_yaml(text: str, file: str | None = None) -> Source:
    """Parse YAML text into a Source; raises SpecError with file:line:col on any problem."""
    _check_flow_depth(text, file)  # before parsing: PyYAML is quadratic in flow depth
    loader = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        raise SpecError([_syntax_problem(e, text, file)]) from None
    except yaml.reader.ReaderError as e:
        line, col = _line_col(text, e.position)
        char = f"U+{e.character:04X}" if isinstance(e.character, int) else repr(e.character)
        raise SpecError([Problem(f"the file contains the control character {char}, which YAML "
                                 "does not allow; remove it", "", file, line, col)]) from None
    except yaml.YAMLError as e:
        raise SpecError([Problem(f"malformed YAML: {e}", "", file)]) from None
    except RecursionError:
        raise SpecError([Problem(f"the document is nested too deeply (more than {MAX_DEPTH} "
                                 "levels of lists or mappings)", "", file)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if root is None:
        raise SpecError([Problem("the file is empty; a spec is a mapping with keys such as "
                                 "input, layers and loss", "", file)])
    _check_expansion(root, file)
    builder = _Builder(loader, file)
    data = builder.build(root, (), 0)
    if builder.problems:
        raise SpecError(builder.problems)
    return Source(data, file, builder.marks)


def _check_flow_depth(text: str, file: str | None) -> None:
    """Refuse `[[[[...` / `{{{...` nested deeper than MAX_DEPTH, found by a quick scan that
    skips quoted text and comments (a bound, not a parser)."""
    depth = 0
    for lineno, line in enumerate(text.split("\n"), 1):
        quote, prev = None, " "
        for col, ch in enumerate(line, 1):
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"" and prev in " \t[{,:":
                quote = ch
            elif ch == "#" and prev in " \t":
                break
            elif ch in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    raise SpecError([Problem(f"lists or mappings are nested more than {MAX_DEPTH} "
                                             "levels deep", "", file, lineno, col)])
            elif ch in "]}":
                depth = max(depth - 1, 0)
            prev = ch


def _check_expansion(root, file: str | None) -> None:
    """Refuse documents whose aliases expand to more than MAX_NODES values, or that use an
    alias inside its own anchor, by sizing the node graph (shared nodes counted once each)."""
    sizes: dict[int, int | None] = {}  # id(node) -> expanded size; None while being sized

    def size(node) -> int:
        if id(node) in sizes:
            if sizes[id(node)] is None:
                mark = node.start_mark
                raise SpecError([Problem("this anchor (&name) contains an alias to itself, so it "
                                         "never ends", "", file, mark.line + 1, mark.column + 1)])
            return sizes[id(node)]
        sizes[id(node)] = None
        if isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            n = 1
        sizes[id(node)] = n
        return n

    try:
        total = size(root)
    except RecursionError:
        total = None
    if total is None or total > MAX_NODES:
        got = f"{total:,} values" if total else "too many values"
        raise SpecError([Problem(f"the document expands to {got} through its aliases (*name); "
                                 f"at most {MAX_NODES:,} are allowed", "", file)])


def _line_col(text: str, position: int) -> tuple[int, int]:
    """1-based (line, col) of a character offset."""
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


# Hints for PyYAML's most common syntax errors, keyed by a fragment of its message.
_SYNTAX_HINTS = [
    ("'\\t'", "YAML indents with spaces, not tabs; replace the tab with spaces"),
    ("expected a single document", "a spec file holds one YAML document; remove the extra '---'"),
    ("found undefined alias", "an alias *name needs an anchor &name earlier in the file"),
    ("mapping values are not allowed here",
     "check the indentation, and put a space after every ':'"),
    ("expected <block end>", "check the indentation of this line against the lines above"),
    ("could not find expected ':'", "a key needs ': ' after it; a list item starts with '- '"),
]


def _syntax_problem(e: yaml.MarkedYAMLError, text: str, file: str | None) -> Problem:
    mark = e.problem_mark or e.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
    msg = " ".join(str(m) for m in (e.context, e.problem) if m)
    hint = next((h for frag, h in _SYNTAX_HINTS if frag in msg), None)
    lines = text.splitlines()
    if line is not None and line <= len(lines):
        indent = lines[line - 1][: len(lines[line - 1]) - len(lines[line - 1].lstrip())]
        if "\t" in indent:
            hint = "YAML indents with spaces, not tabs; replace the tab with spaces"
    return Problem(f"malformed YAML: {msg}" + (f"; {hint}" if hint else ""), "", file, line, col)


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


class _Builder:
    """Turns a composed YAML node graph into plain data, recording marks and collecting
    problems; the value and depth budgets make alias bombs and recursive aliases fail fast."""

    def __init__(self, loader, file):
        self.loader, self.file = loader, file
        self.marks: dict = {}
        self.problems: list[Problem] = []
        self.budget = MAX_NODES

    def fail(self, message, path, here):
        self.problems.append(Problem(message, format_path(path), self.file, *here))

    def build(self, node, path, depth):
        here = (node.start_mark.line + 1, node.start_mark.column + 1)
        self.marks.setdefault(path, here)
        self.budget -= 1
        if self.budget < 0 or depth > MAX_DEPTH:  # (_check_expansion makes the first rare)
            what = (f"the document expands to more than {MAX_NODES} values" if self.budget < 0
                    else f"lists or mappings are nested more than {MAX_DEPTH} levels deep")
            raise SpecError(self.problems + [Problem(what, "", self.file, *here)])
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path, here)
        if node.tag not in _PLAIN_TAGS:
            self.fail(f"YAML tag '{_short_tag(node.tag)}' is not allowed: a spec holds plain "
                      "data only (mappings, lists, strings, numbers, booleans)", path, here)
            return None
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, path + (i,), depth + 1) for i, child in enumerate(node.value)]
        return self.mapping(node, path, depth)

    def scalar(self, node, path, here):
        if node.tag == _TAG + "timestamp" and node.style is None:
            return node.value  # an unquoted date stays the text it is
        if node.tag not in _PLAIN_TAGS:
            self.fail(f"YAML tag '{_short_tag(node.tag)}' is not allowed: a spec holds plain "
                      "data only (mappings, lists, strings, numbers, booleans)", path, here)
            return None
        value = self.loader.construct_object(node)
        if node.style is None and node.tag in (_TAG + "int", _TAG + "float"):
            form = next((name for name, rule in _YAML11_NUMBERS if rule.fullmatch(node.value)),
                        None)
            if form:
                self.fail(f"'{node.value}' is a YAML 1.1 {form} number, read as {value!r}; "
                          "write the number in plain decimal (or quote it if it is text)",
                          path, here)
                return None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            shown = node.value if len(node.value) <= 30 else node.value[:27] + "..."
            self.fail(f"the number {shown} is too large for a spec (at most {MAX_INT:,})",
                      path, here)
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(f"'{node.value}' is not a finite number; a spec needs finite values",
                      path, here)
            return None
        return value

    def mapping(self, node, path, depth):
        # flatten_mapping puts the entries merged in by `<<: *base` first, then the written ones.
        written = sum(1 for key_node, _ in node.value if key_node.tag != _TAG + "merge")
        try:
            self.loader.flatten_mapping(node)  # resolve `<<: *base` merge keys
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark
            self.fail(f"bad merge key (<<): {e.problem}", path, (mark.line + 1, mark.column + 1))
            return {}
        first_written = len(node.value) - written
        out: dict = {}
        merged: set = set()  # keys that came from a merge, so a written key may replace them
        for i, (key_node, value_node) in enumerate(node.value):
            key_here = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in (
                    _PLAIN_TAGS | {_TAG + "timestamp"}):
                self.fail("a mapping key must be a plain word, such as 'type'", path, key_here)
                continue
            key = key_node.value  # keys are text: `1:` is "1", `yes:` is "yes"
            kpath = path + (key,)
            if key in out and key not in merged:
                first = self.marks.get(kpath, (None, None))[0]
                self.fail(f"duplicate key '{key}' (first given on line {first}); keep one of them",
                          kpath, key_here)
                continue
            if key in out:  # a later merge or a written key replaces a merged one
                for stale in [p for p in self.marks if p[:len(kpath)] == kpath]:
                    del self.marks[stale]
            if i < first_written:
                merged.add(key)
            else:
                merged.discard(key)
            self.marks[kpath] = key_here  # the key's own line, not its value's
            out[key] = self.build(value_node, kpath, depth + 1)
        return out
