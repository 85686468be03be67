"""`--set key.path=value` overrides: applied to a loaded spec's data before validation.

A value set so is located at its option (`--set ...`) in later messages instead of the file.
"""

from __future__ import annotations

import re

from netspec.errors import Problem, SpecError
from netspec.spec.yamlio import Source, format_path, load_yaml

_KEY_PATH = re.compile(r"[^.\[\]=]+(?:\.[^.\[\]=]+|\[-?\d+\])*")


def apply_override(src: Source, item: str) -> None:
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
