"""The line map of an expanded spec: where each layer of the flat list was written.

`blocks.expand` returns an `Expanded` source: the flat layer list plus, per layer, its `Origin`
(its path in the file and the chain of block uses that copied it) and its `label` (its name and
input names as written). Problems found in the flat list (by validation or shape inference) are
located through it at the line of the layer as written, naming the use site's line too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from netspec.errors import Problem
from netspec.spec.yamlio import Source, format_path


@dataclass(frozen=True)
class Origin:
    """Where an expanded layer was written, and the block uses that put it there."""

    path: tuple  # in the file: ("layers", 3) or ("blocks", "basic", "layers", 5)
    uses: tuple = ()  # ((instance prefix, block name, use path), ...), innermost first


@dataclass
class Expanded(Source):
    """The flat spec plus its line map; problems are located in the original file."""

    original: Source | None = None
    origins: list = field(default_factory=list)  # Origin per expanded layer
    labels: list = field(default_factory=list)  # (name, input names) as written, per layer
    _plain: dict = field(default_factory=dict, repr=False)  # id(problem) -> its key sans use site

    def _translate(self, path) -> tuple[tuple, str]:
        path = tuple(path)
        if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int) \
                and 0 <= path[1] < len(self.origins):
            origin = self.origins[path[1]]
            return origin.path + path[2:], self.use_sites(path[1])
        return path, ""

    def use_sites(self, j: int) -> str:
        """' (in layer1.0: block 'basic' used at line 22)' for a layer from a block, else ''."""
        return use_sites(self.origins[j].uses, self.original)

    def written(self, j: int) -> str:
        """Where layer j of the flat list is written: 'layers[3]', or for a block's copy
        'blocks.basic.layers[0] (line 7, in layer1.1)'."""
        if not 0 <= j < len(self.origins):
            return f"layers[{j}]"
        origin = self.origins[j]
        if not origin.uses:
            return format_path(origin.path)
        line = self.original.locate(origin.path)[0]
        return f"{format_path(origin.path)} (line {line}, in {origin.uses[0][0]})"

    def in_words(self, message: str) -> str:
        """`message` with each 'layers[j]' (an index of the flat list) said as written."""
        return re.sub(r"\blayers\[(\d+)\]", lambda m: self.written(int(m.group(1))), message)

    def locate(self, path):
        return self.original.locate(self._translate(path)[0])

    def origin(self, path):
        return self.original.origin(self._translate(path)[0])

    def problem(self, path, message: str) -> Problem:
        where, uses = self._translate(path)
        out = self.original.problem(where, message + uses)
        self._plain[id(out)] = (out.file, out.line, out.col, out.path, message)
        return out

    def once(self, problems: list[Problem]) -> list[Problem]:
        """Drop repeats of a problem that every copy of a block has (the first one stays)."""
        seen, out = set(), []
        for p in problems:
            key = self._plain.get(id(p), id(p))
            if key not in seen:
                seen.add(key)
                out.append(p)
        return out


def use_sites(uses: tuple, src: Source) -> str:
    """' (in layer1.0: block 'basic' used at line 22)' for the chain of block uses `uses`
    (innermost first), or '' outside blocks."""
    if not uses:
        return ""
    parts = []
    for _prefix, block, use in uses:
        option = src.origin(use)
        at = f"set by {option}" if option else f"used at line {src.locate(use)[0]}"
        parts.append(f"block '{block}' {at}")
    return f" (in {uses[0][0]}: {', inside '.join(parts)})"
