"""Blocks and names: the spec's graph syntax, expanded into one flat list of layers.

    blocks:
      basic:
        params: {ch: 16}              # defaults; `$ch` in the block's layers is replaced
        layers:
          - {type: conv2d, name: conv1, out_channels: $ch, kernel_size: 3, padding: 1}
          - {type: relu}
          - {type: add, inputs: [conv1, in]}   # `in`: the block's input
    layers:
      - {block: basic, name: layer1, repeat: 2, with: {ch: 8}}

`expand(src)` runs on the loaded YAML data before validation. Every block use becomes copies of
the block's layers, named as nn.Sequential nests them (`layer1.0.conv1`, or `layer2.conv1`
without `repeat`), and every name in `inputs` is resolved, within its scope, to the full name
of the layer whose output it means (a block's name means its last layer). The result is a
`Source` whose `layers` is a plain flat spec: loading it again gives the same network. A spec
without blocks comes out unchanged, so sequential specs keep their exact meaning.

The returned `Expanded` source (see expanded.py) keeps a line map: a problem at `layers[j]` of
the flat list is reported at the line of the layer as written (in its block), naming the use
site's line too. Each layer's `label` (its name and input names as written) lets messages use
the user's words.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from netspec.errors import Problem, did_you_mean, suggestions
from netspec.spec.expanded import Expanded, Origin, use_sites
from netspec.spec.yamlio import Source, format_path

USE_KEYS = ("block", "name", "repeat", "with", "inputs")  # the keys of a block use
BLOCK_KEYS = ("params", "layers")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PARAM = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
WORD = "ASCII letters (A-Z, a-z), digits and '_', not starting with a digit"  # what NAME means
MAX_LAYERS = 10_000  # after expansion; repeat and nesting multiply
MAX_DEPTH = 32  # blocks inside blocks (each level is a few Python frames of recursion)


def uses_graph_syntax(data) -> bool:
    """True when a spec has blocks or block uses (then every layer gets its full name)."""
    layers = data.get("layers")
    return "blocks" in data or (isinstance(layers, list) and any(
        isinstance(item, dict) and "block" in item for item in layers))


def expand(src: Source) -> tuple[Source, list[Problem]]:
    """The flat spec of `src` (a new Source) and the problems found on the way."""
    data = src.data
    if not isinstance(data.get("layers"), list):  # validation says what layers must be
        rest = {k: v for k, v in data.items() if k != "blocks"}
        return Source(rest, src.file, src.marks, src.overrides), []
    x = _Expander(src)
    x.check_blocks()
    scope = _Scope(prefix="", input=None, full_names=uses_graph_syntax(data))
    x.items(data["layers"], ("layers",), scope, "input", ())
    flat = {k: v for k, v in data.items() if k != "blocks"}
    flat["layers"] = x.layers
    # locate() and problem() translate paths through the line map to the original's marks
    out = Expanded(flat, src.file, {}, {}, src, x.origins, x.labels)
    return out, x.problems


@dataclass
class _Scope:
    prefix: str  # "" at the top, "layer1.0." inside an instance
    input: str | None  # full name of what `in` means (None at the top level)
    full_names: bool  # write every layer's full name (the spec has blocks)
    local: dict = field(default_factory=dict)  # name as written -> full name of its output


class _Expander:
    def __init__(self, src: Source):
        self.src = src
        self.blocks = src.data.get("blocks")
        self.layers: list = []
        self.origins: list[Origin] = []
        self.labels: list = []
        self.problems: list[Problem] = []
        self.stack: list[str] = []  # blocks being expanded, to refuse recursion
        self.last = "input"  # full name of the last layer emitted: what the next one reads
        self.too_big = False  # MAX_LAYERS passed (reported once); expansion stops
        self.uses: tuple = ()  # the block uses whose copy is being made, innermost first
        self.said: set = set()

    def fail(self, path, message):
        """Report a problem once; inside a block, with the use site of the copy being made."""
        if (tuple(path), message) in self.said:
            return  # the same mistake in another copy of the block
        self.said.add((tuple(path), message))
        if path and path[0] == "blocks":
            message += use_sites(self.uses, self.src)
        self.problems.append(self.src.problem(path, message))

    # ---------------------------------------------------------- block definitions

    def check_blocks(self):
        """Shape of `blocks:`, declared parameters, and no undeclared `$name`."""
        if self.blocks is None:
            return
        if not isinstance(self.blocks, dict):
            self.fail(("blocks",), "blocks is a mapping of block names to blocks, e.g. "
                                   "blocks: {basic: {params: {ch: 16}, layers: [...]}}")
            self.blocks = {}
            return
        for name, block in list(self.blocks.items()):
            where = ("blocks", name)
            if not NAME.match(name) or name in ("in", "input"):
                self.fail(where, f"block name '{name}' must be a word of {WORD}, and not "
                                 "'in' or 'input'")
            if not isinstance(block, dict):
                self.fail(where, "a block is a mapping with `layers` (and optionally `params`)")
                self.blocks[name] = None
                continue
            for key in block:
                if key not in BLOCK_KEYS:
                    self.fail(where + (key,), f"unknown key '{key}' in a block"
                                              f"{did_you_mean(key, BLOCK_KEYS)}; a block has "
                                              "`params` (optional) and `layers`")
            params = block.get("params", {})
            if not isinstance(params, dict):
                self.fail(where + ("params",), "params is a mapping of parameter names to "
                                               "default values, e.g. params: {ch: 16}")
                block["params"] = params = {}
            layers = block.get("layers")
            if not isinstance(layers, list) or not layers:
                self.fail(where + ("layers",) if "layers" in block else where,
                          "a block needs `layers`: a non-empty list of layers")
                self.blocks[name] = None
                continue
            self._check_params(layers, where + ("layers",), name, params)

    def _outside_blocks(self, node, path):
        """A `$name` in a layer outside any block: nothing declares it."""
        for where, text in _strings(node, path):
            if PARAM.match(text):
                self.fail(where, f"'{text}' is a block parameter, but this layer is not in a "
                                 "block; write the value itself")

    def _check_params(self, node, path, block, params):
        """Every `$...` string in a block's layers names one of its declared `params`."""
        for where, text in _strings(node, path):
            if not text.startswith("$"):
                continue
            m = PARAM.match(text)
            if not m:  # '$', '$1x', '$a b': no parameter name can be written so
                self.fail(where, f"'{text}' is not a parameter reference: write $ and a "
                                 f"parameter's name ({WORD}), e.g. $ch")
            elif m.group(1) not in params:
                name = m.group(1)
                self.fail(where, f"'{text}' is not a parameter of block '{block}'"
                                 f"{did_you_mean(name, list(params))}; declare it in "
                                 f"blocks.{block}.params (e.g. params: {{{name}: 16}})")

    # ---------------------------------------------------------- layers and block uses

    def items(self, items, path, scope: _Scope, prev: str, uses: tuple) -> str:
        """Expand a list of layers and block uses; returns the full name of its output."""
        written = [self._written_name(item, k) for k, item in enumerate(items)]
        outer, self.uses = self.uses, uses
        for k, item in enumerate(items):
            here = path + (k,)
            if self.too_big:
                return prev
            if len(self.layers) > MAX_LAYERS:
                self.too_big = True
                self.fail(here, f"the network expands to more than {MAX_LAYERS:,} layers; "
                                "use smaller repeat counts")
                break
            if written[k] in written[:k] and isinstance(item, dict) and "name" in item:
                j = written.index(written[k])
                self.fail(here + ("name",), f"layer name '{written[k]}' is already used by "
                                            f"{format_path(path + (j,))}; names must be unique")
            if isinstance(item, dict) and "block" in item:
                out = self.use(item, here, scope, prev, uses, written, k)
            else:
                out = self.layer(item, here, scope, prev, uses, written, k)
            if out is None:  # reported; later references to it read what it would have read
                out = prev
            scope.local.setdefault(written[k], out)
            prev = out
            self.uses = uses  # (a nested block use changed it)
        self.uses = outer
        return prev

    @staticmethod
    def _written_name(item, k) -> str:
        if not isinstance(item, dict):
            return f"layer{k}"
        name = item.get("name")
        if isinstance(name, str) and name:
            return name
        if "block" in item and isinstance(name, int) and not isinstance(name, bool) \
                and name >= 0:
            return str(name)
        kind = item.get("block") if "block" in item else item.get("type")
        return f"{kind}{k}"

    def layer(self, item, here, scope, prev, uses, written, k):
        origin = Origin(here, uses)
        if not uses:
            self._outside_blocks(item, here)
        if not isinstance(item, dict):  # validation reports it at the same place
            full = scope.prefix + written[k]
            self._emit(item, origin, (written[k], ()), full)
            return full
        layer = dict(item)
        full = scope.prefix + written[k]
        given = layer.get("name")
        if scope.full_names and (given is None or isinstance(given, str) and given):
            layer["name"] = full  # any other name ('', 3) stays for validation to report
        ins = layer.get("inputs")
        if isinstance(ins, list) and ins and all(isinstance(n, str) for n in ins):
            resolved = [self.resolve(n, here + ("inputs", i), scope, written, k)
                        for i, n in enumerate(ins)]
            if None in resolved:
                resolved = [r or n for r, n in zip(resolved, ins)]
            layer["inputs"] = resolved
            label = (written[k], tuple(ins))
        else:
            if ins is None and prev != self.last:  # the first layer of a block: its input
                layer["inputs"] = [prev]
            label = (written[k], ("in",) if prev == scope.input else (prev,))
        self._emit(layer, origin, label, full)
        return full

    def _emit(self, layer, origin, label, full):
        self.layers.append(layer)
        self.last = full
        self.origins.append(origin)
        self.labels.append(label)

    def use(self, item, here, scope, prev, uses, written, k):
        for key in item:
            if key not in USE_KEYS:
                self.fail(here + (key,), f"unknown key '{key}' in a block use"
                                         f"{did_you_mean(key, USE_KEYS)}; a block use has "
                                         f"{', '.join(USE_KEYS)}")
        name = item["block"]
        blocks = self.blocks if isinstance(self.blocks, dict) else {}
        if not isinstance(name, str) or name not in blocks:
            known = list(blocks)
            hint = (f"; defined blocks: {', '.join(known)}" if known
                    else "; define it under `blocks:` at the top level")
            self.fail(here + ("block",), f"unknown block {name!r}{did_you_mean(name, known)}"
                                         + hint)
            return None
        block = blocks[name]
        if block is None:
            return None  # its definition is broken (reported)
        if name in self.stack:
            self.fail(here + ("block",), f"block '{name}' uses itself (through "
                                         f"{' -> '.join(self.stack + [name])}); a block "
                                         "cannot contain itself")
            return None
        if len(self.stack) >= MAX_DEPTH:
            self.fail(here + ("block",), f"blocks nest more than {MAX_DEPTH} deep (through "
                                         f"{' -> '.join(self.stack[:3])} -> ... -> {name}); "
                                         "use fewer levels of blocks inside blocks")
            return None
        title = item.get("name", written[k])
        if uses and isinstance(title, int) and not isinstance(title, bool) and title >= 0:
            title = str(title)  # inside a block, as nn.Sequential numbers its children
        if not isinstance(title, str) or not (NAME.match(title) or uses and title.isdigit()):
            self.fail(here + ("name",), f"a block use's name must be a word of {WORD} (or, "
                                        f"inside a block, a number), got {title!r}")
            return None
        repeat = item.get("repeat")
        if repeat is not None and (not isinstance(repeat, int) or isinstance(repeat, bool)
                                   or repeat < 1):
            self.fail(here + ("repeat",), f"repeat must be a whole number >= 1, got {repeat!r}")
            return None
        if repeat is not None and repeat > MAX_LAYERS:  # fail before looping, not after
            self.fail(here + ("repeat",), f"repeat {repeat:,} is too large: a network has at "
                                          f"most {MAX_LAYERS:,} layers after expansion")
            return None
        values = self._values(item, here, name, block)
        if values is None:
            return None
        ins = item.get("inputs")
        if ins is not None:
            if not (isinstance(ins, list) and len(ins) == 1 and isinstance(ins[0], str)):
                self.fail(here + ("inputs",), "a block has one input: give inputs as a list "
                                              "of one name, e.g. inputs: [stem]")
                return None
            prev = self.resolve(ins[0], here + ("inputs", 0), scope, written, k)
            if prev is None:
                return None
        layers = _substitute(block["layers"], values)
        self.stack.append(name)
        for r in range(repeat or 1):
            if self.too_big:
                break
            prefix = scope.prefix + title + (f".{r}." if repeat is not None else ".")
            inner = _Scope(prefix, prev, True)
            prev = self.items(layers, ("blocks", name, "layers"), inner, prev,
                              ((prefix[:-1], name, here),) + uses)
        self.stack.pop()
        return prev

    def _values(self, item, here, name, block):
        """The block's parameter values at this use: `with` over the defaults."""
        given = item.get("with", {})
        if not isinstance(given, dict):
            self.fail(here + ("with",), "with is a mapping of parameter values, e.g. "
                                        "with: {ch: 32}")
            return None
        params = block.get("params", {})
        ok = True
        meant = set()  # parameters that a misspelt key probably meant
        for key in given:
            if key not in params:
                meant.update(suggestions(key, list(params)))
                declared = (f"block '{name}' has parameters {', '.join(params)}" if params
                            else f"block '{name}' declares no params")
                self.fail(here + ("with", key), f"unknown parameter '{key}'"
                                                f"{did_you_mean(key, list(params))}; {declared}")
                ok = False
        values = {**params, **given}
        for key, value in values.items():
            if value is None and key not in meant:
                line = self.src.locate(("blocks", name, "params", key))[0]
                self.fail(here, f"block '{name}' needs a value for its parameter '{key}' "
                                f"(declared without a default at line {line}); add "
                                f"with: {{{key}: ...}}")
            ok = ok and value is not None
        return values if ok else None

    def resolve(self, n, path, scope, written, k) -> str | None:
        """Full name of what `n` means at item k of a scope; None (reported) if nothing."""
        if scope.input is not None and n == "in":
            return scope.input
        if scope.input is None and n == "input":
            return "input"
        if n in scope.local:
            return scope.local[n]
        if n == written[k]:
            self.fail(path, f"'{n}' is this layer itself; a layer reads only layers above it")
            return None
        if n in written[k:]:
            j = written.index(n, k)
            line = self.src.locate(path[:-3] + (j,))[0]
            self.fail(path, f"'{n}' is defined further down, at line {line}; a layer reads only "
                            "layers above it (the list order is the execution order)")
            return None
        here = "in" if scope.input is not None else "input"
        choices = [here, *scope.local]
        if n in ("in", "input"):
            hint = ("; inside a block, its input is 'in'" if here == "in"
                    else "; 'in' is a block's input, the network's input is 'input'")
        elif here == "in":
            hint = (f"{did_you_mean(n, choices)}; inside a block, inputs name layers of the "
                    "same block, or 'in' for its input")
        else:
            hint = (f"{did_you_mean(n, choices)}; inputs name earlier layers or blocks, or "
                    "'input' for the network's input")
        self.fail(path, f"unknown input '{n}'{hint}")
        return None


def _strings(node, path):
    """(path, text) of every string in the YAML value `node` at `path`, in document order."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, path + (i,))
    elif isinstance(node, str):
        yield path, node


def _substitute(node, values):
    """A deep copy of `node` with every '$name' string replaced by values[name]."""
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, str):
        m = PARAM.match(node)
        if m and m.group(1) in values:
            return copy.deepcopy(values[m.group(1)])
    return node


__all__ = ["NAME", "expand", "uses_graph_syntax"]
