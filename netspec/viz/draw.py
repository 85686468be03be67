"""Network diagrams from shape inference alone: the picture behind `netspec draw` and reports.

    nodes = graph(spec)                  # one Node per layer: settings, params, MACs, producers
    scene = layout(nodes, title, ...)    # boxes, wires, labels at pixel positions (a Scene)
    to_svg(scene) / to_png(scene)        # SVG text or PNG bytes (viz/scene.py); save() writes

The layout works on any DAG of named nodes listed in execution order, each naming its
producers: a sequential spec is the chain input -> layer 0 -> layer 1 -> ... Each node gets a
row (its place in the order) and a column: a node continues the column of its first producer
when that producer is the node just above it, else it opens a side column (a branch). A wire
into another column runs down its producer's column to the gap just above its target, then
across (so a branch rejoining a merge crosses no other branch, and keeps its shape label beside
it). A wire that would cross a box is routed down a lane to the right of its target's column
and enters it from the side (skip connections). Each producer's output shape is written once,
beside the wire just below it. Repeated blocks (`layer1.0.*`, `layer1.1.*` with the same
layers) can be collapsed into one box `layer1 ×2`, and so can uses of a block without `repeat`
that follow one another (`first.*`, `second.*` -> `first–second ×2`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from netspec.viz.scene import MARK, Scene, text_width, to_png, to_svg, write_file

INPUT = "input"  # the producer name of the network input


@dataclass(frozen=True)
class Node:
    name: str
    type: str
    detail: str  # key settings: '5×5, 6, pad 2'
    params: int
    macs: int
    shape: tuple  # output shape per sample
    inputs: tuple  # producer names; INPUT is the network input
    kind: str = "plain"  # colour family: conv, pool, dense, norm, merge, block, plain
    repeat: int = 1  # > 1 for a collapsed block
    layers: int = 1  # layers this box stands for


def shape_text(shape) -> str:
    """(6, 28, 28) -> '6×28×28'; (10,) -> '10'."""
    return "×".join(str(d) for d in shape)


def count_text(n: float) -> str:
    """61706 -> '61.7k', 416520 -> '416.5k', 850 -> '850'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:,.0f}"


# ------------------------------------------------------------------ spec -> nodes

ALWAYS = ("kernel_size", "out_channels", "out_features", "p", "negative_slope")
HIDDEN = ("type", "name", "init", "inputs")


def detail(layer) -> str:
    """Key settings of a layer, read from its fields: '3×3, 16, stride 2, pad 1'."""
    fields = layer.model_dump(mode="json", exclude_defaults=True)
    for key in ALWAYS:
        if hasattr(layer, key):
            fields.setdefault(key, getattr(layer, key))
    parts = []
    for key in ("kernel_size", "out_channels", "out_features"):
        value = fields.pop(key, None)
        if value is not None:
            parts.append(_kernel(value) if key == "kernel_size" else str(value))
    names = {"stride": "stride", "padding": "pad", "dilation": "dilation", "p": "p",
             "negative_slope": "slope"}
    for key, value in fields.items():
        if key in HIDDEN or value is None:
            continue
        if key == "bias":
            parts.append("no bias" if value is False else "bias")
        else:
            parts.append(f"{names.get(key, key)} {_pair(value)}")
    return ", ".join(parts)


def _kernel(value) -> str:
    """5 -> '5×5'; [3, 1] -> '3×1'."""
    h, w = value if isinstance(value, (list, tuple)) else (value, value)
    return f"{h}×{w}"


def _pair(value) -> str:
    if isinstance(value, (list, tuple)):
        return str(value[0]) if len(set(value)) == 1 else "×".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _kind(info) -> str:
    layer = info.layer
    if len(getattr(info, "inputs", ()) or ()) > 1:
        return "merge"
    if hasattr(layer, "kernel_size"):
        return "conv" if info.params else "pool"
    if hasattr(layer, "out_features"):
        return "dense"
    return "norm" if info.params else "plain"


def graph(spec, collapse: bool = False) -> list[Node]:
    """One Node per layer of a validated spec, in execution order."""
    nodes, previous = [], INPUT
    for info in spec.infos:
        inputs = tuple(getattr(info, "inputs", None) or (previous,))
        nodes.append(Node(info.name, info.type, detail(info.layer), info.params, info.macs,
                          tuple(info.out_shape), inputs, _kind(info)))
        previous = info.name
    return collapse_blocks(nodes) if collapse else nodes


def collapse_blocks(nodes: list[Node]) -> list[Node]:
    """Replace runs of identical repeated blocks (`P.0.*`, `P.1.*`, ...) by one node `P`, then
    chains of identical uses of a block without `repeat` (`a.*`, `b.*`, ...) by one node
    `a–b`. Both are read from the names, so a resolved spec (spec.yaml) collapses alike."""
    return _collapse_uses(_collapse_repeats(nodes))


def _collapse_uses(nodes: list[Node]) -> list[Node]:
    """Consecutive groups `U.*` (U the first part of the name) with the same layers, each
    reading the one before, become one node `first–last`, as `block ×n`."""
    groups: list[list[Node]] = []  # runs of nodes with the same first name part
    for n in nodes:
        head = n.name.split(".", 1)[0] if "." in n.name and n.type != "block" else None
        if groups and head is not None and groups[-1][0].name.split(".", 1)[0] == head \
                and "." in groups[-1][0].name and groups[-1][0].type != "block":
            groups[-1].append(n)
        else:
            groups.append([n])

    def signature(group):
        return tuple((n.name.split(".", 1)[-1], n.type, n.detail) for n in group)

    def outside(group):
        names = {n.name for n in group}
        return tuple(dict.fromkeys(p for n in group for p in n.inputs if p not in names))

    out, renamed, i = [], {}, 0
    while i < len(groups):
        run = [groups[i]]
        dotted = "." in groups[i][0].name and groups[i][0].type != "block"
        while dotted and i + len(run) < len(groups):
            nxt = groups[i + len(run)]
            if signature(nxt) != signature(run[-1]) or outside(nxt) != (run[-1][-1].name,):
                break
            run.append(nxt)
        if len(run) < 2:
            out.extend(groups[i])
            i += 1
            continue
        members = [n for g in run for n in g]
        name = f"{run[0][0].name.split('.', 1)[0]}–{run[-1][0].name.split('.', 1)[0]}"
        types = ", ".join(dict.fromkeys(n.type for n in run[0]))
        text = f"{len(run[0])} layers: {types}"
        out.append(Node(name, "block", text if len(text) <= 40 else text[:39] + "…",
                        sum(n.params for n in members), sum(n.macs for n in members),
                        members[-1].shape, outside(run[0]), "block", len(run),
                        sum(n.layers for n in members)))
        renamed.update({n.name: name for n in members})
        i += len(run)
    return [replace(n, inputs=tuple(dict.fromkeys(renamed.get(p, p) for p in n.inputs)))
            for n in out]


def _collapse_repeats(nodes: list[Node]) -> list[Node]:
    """Runs of identical repeated blocks (`P.0.*`, `P.1.*`, ...) -> one node `P`."""
    key = [re.match(r"^(.+?)\.(\d+)\.(.+)$", n.name) for n in nodes]
    out, i, renamed = [], 0, {}
    while i < len(nodes):
        m = key[i]
        if not m:
            out.append(nodes[i])
            i += 1
            continue
        prefix, j, instances = m.group(1), i, []
        while j < len(nodes) and key[j] and key[j].group(1) == prefix:
            k = key[j].group(2)
            start = j
            while j < len(nodes) and key[j] and key[j].group(1) == prefix and \
                    key[j].group(2) == k:
                j += 1
            instances.append(nodes[start:j])
        signature = {tuple((key[nodes.index(n)].group(3), n.type, n.detail) for n in inst)
                     for inst in instances}
        members = [n for inst in instances for n in inst]
        if len(instances) < 2 or len(signature) != 1:
            out.extend(members)
        else:
            names = {n.name for n in members}
            outside = tuple(dict.fromkeys(p for n in members for p in n.inputs
                                          if p not in names))
            types = ", ".join(dict.fromkeys(n.type for n in instances[0]))
            text = f"{len(instances[0])} layers: {types}"
            out.append(Node(prefix, "block", text if len(text) <= 40 else text[:39] + "…",
                            sum(n.params for n in members), sum(n.macs for n in members),
                            members[-1].shape, outside, "block", len(instances),
                            len(members)))
            renamed.update({n: prefix for n in names})
        i = j
    return [replace(n, inputs=tuple(dict.fromkeys(renamed.get(p, p) for p in n.inputs)))
            for n in out]


# ------------------------------------------------------------------ layout

PALETTE = {  # kind -> (fill, stroke)
    "conv": ("#e8f0fb", "#3b6fb6"), "pool": ("#e6f4f1", "#2a8c7a"),
    "dense": ("#fdf0e4", "#c9732c"), "norm": ("#f1ebf8", "#7a55ad"),
    "merge": ("#eaf5e4", "#4f8f3a"), "block": ("#f6f6f2", "#6b6b5e"),
    "plain": ("#f5f6f7", "#9aa1a9"), "io": ("#ffffff", "#5c6670"),
}
INK, MUTED, WIRE = "#1f2933", "#5c6670", "#6b7580"
NAME, SMALL, LABEL = 13, 11, 11  # font sizes (px)
FULL, LIGHT = 46, 30  # box heights: with a settings line, and without
GAP, MARGIN, LANE = 36, 20, 12  # between rows, around the picture, between lanes


def _shown_type(n: Node) -> str:
    return f"block ×{n.repeat}" if n.repeat > 1 else n.type


def _title(n: Node) -> str:
    return f"{n.name} ×{n.repeat}" if n.repeat > 1 else n.name


def _params(n: Node) -> str:
    return f"{n.params:,} params" if n.params else ""


def layout(nodes: list[Node], title: str, input_shape, output: str = "output") -> Scene:
    """Place the nodes of a DAG (execution order) and their wires; see the module docstring."""
    io_in = Node(INPUT, "", "", 0, 0, tuple(input_shape), (), "io")
    last = nodes[-1].name if nodes else INPUT
    io_out = Node("output", output, "", 0, 0, (), (last,), "io")
    allnodes = [io_in, *nodes, io_out]
    row, col = _grid(allnodes)

    label_w = max(text_width(shape_text(n.shape), LABEL, mono=True) for n in allnodes)
    width = max([200, 2 * (label_w + 18)] + [
        max(text_width(_title(n), NAME, bold=True) + text_width(_shown_type(n), SMALL) + 34,
            text_width(n.detail, SMALL) + text_width(_params(n), SMALL, mono=True) + 44)
        for n in allnodes])
    height = {n.name: FULL if (n.detail or n.params) else LIGHT for n in allnodes}
    occupied = {(col[n.name], row[n.name]) for n in allnodes}

    def blocked(u, v):  # would a straight wire into v cross a box of v's column?
        return any((col[v], r) in occupied for r in range(row[u] + 1, row[v]))

    edges = [(p, n.name) for n in allnodes for p in n.inputs]
    lanes = _assign_lanes([(u, v) for u, v in edges if blocked(u, v)], row, col)
    xs, x = [], MARGIN
    for c in range(max(col.values()) + 1):
        xs.append(x)
        x += width + 32 + LANE * (1 + max((k for (u, v), k in lanes.items() if col[v] == c),
                                          default=-1))
    header = 58
    tops, y = [], MARGIN + header
    for r in range(max(row.values()) + 1):
        tops.append(y)
        y += max(height[n.name] for n in allnodes if row[n.name] == r) + GAP

    def box(name):  # x, y, w, h
        return xs[col[name]], tops[row[name]], width, height[name]

    def below(name):  # the y of the gap under a node's row, where its wires turn
        r = row[name]
        return tops[r + 1] - GAP if r + 1 < len(tops) else y - GAP

    params = sum(n.params for n in nodes)
    macs = sum(n.macs for n in nodes)
    count = sum(n.layers for n in nodes)
    totals = f"{params:,} parameters · {count_text(macs)} MACs per sample · {count} layers"
    scene = Scene(max(x - 32 + MARGIN, text_width(title, 16, bold=True) + 2 * MARGIN,
                      text_width(totals, 12) + 2 * MARGIN), y - GAP + MARGIN)
    scene.meta.update(params=params, macs=macs, layers=count, title=title)
    scene.text(MARGIN, MARGIN + 14, title, 16, INK, bold=True, cls="title")
    scene.text(MARGIN, MARGIN + 36, totals, 12, MUTED, cls="totals")

    shapes = {n.name: shape_text(n.shape) for n in allnodes}
    def clear_below(p, n):  # no box in p's column between p and n
        return not any((col[p], r) in occupied for r in range(row[p] + 1, row[n]))

    for n in allnodes:  # wires first, so boxes and labels sit on top
        x0, y0, w, h = box(n.name)
        for p in n.inputs:
            px, py, _, ph = box(p)
            turn = below(p) + 8
            if col[p] != col[n.name] and (p, n.name) not in lanes and clear_below(p, n.name):
                turn = tops[row[n.name]] - GAP + 8  # down its own column, across just above n
            start = [(px + w / 2, py + ph), (px + w / 2, turn)]
            if (p, n.name) in lanes:  # down a lane, into the side of the box
                lane_x, mid = x0 + w + 16 + LANE * lanes[p, n.name], y0 + h / 2
                pts, head = [*start, (lane_x, turn), (lane_x, mid), (x0 + w, mid)], "left"
            else:
                cx = x0 + w / 2
                pts, head = [*start, (cx, turn), (cx, y0)], "down"
            scene.wire(pts, head, WIRE, {"from": p, "to": n.name, "shape": shapes[p]})
    for n in allnodes:
        x0, y0, w, h = box(n.name)
        fill, stroke = PALETTE[n.kind]
        data = {"name": n.name, "type": n.type, "params": n.params, "macs": n.macs,
                "shape": shapes[n.name], "inputs": ",".join(n.inputs)}
        if n.repeat > 1:
            data["repeat"] = n.repeat
        tip = f"{_title(n)} ({_shown_type(n)})"
        if n.inputs:
            tip += f"\nin: {', '.join(f'{p} {shapes[p]}' for p in n.inputs)}"
        if n.shape:
            tip += f"\nout: {shapes[n.name]}"
        if n.params or n.macs:
            tip += f"\n{n.params:,} parameters, {n.macs:,} MACs per sample"
        with scene.group("node", data, tip):
            scene.rect(x0, y0, w, h, fill, stroke, dashed=n.repeat > 1)
            scene.rect(x0, y0, 5, h, stroke, stroke)
            scene.text(x0 + 14, y0 + 19, _title(n), NAME, INK, bold=True, cls="node-name")
            scene.text(x0 + w - 10, y0 + 19, _shown_type(n), SMALL, MUTED, anchor="end",
                       cls="node-type")
            if h == FULL:
                scene.text(x0 + 14, y0 + 37, n.detail, SMALL, INK, cls="node-detail")
                scene.text(x0 + w - 10, y0 + 37, _params(n), SMALL, MUTED, anchor="end",
                           mono=True, cls="node-params")
        if n is not io_out:  # the output shape, once, under the producer
            scene.text(x0 + w / 2 + 8, below(n.name) + GAP / 2 + 8, shapes[n.name], LABEL,
                       INK, mono=True, cls="edge-label", data={"from": n.name})
    return scene


def _grid(nodes: list[Node]) -> tuple[dict, dict]:
    """Row and column of every node: chains go straight down, branches open columns."""
    row, col, taken = {}, {}, set()
    for i, n in enumerate(nodes):
        r = 1 + max((row[p] for p in n.inputs), default=-1)
        if len(n.inputs) > 1:  # a merge sits under its leftmost producer
            c = min(col[p] for p in n.inputs)
        elif not n.inputs or n.inputs[0] == nodes[i - 1].name:  # a chain keeps its column
            c = col.get(n.inputs[0], 0) if n.inputs else 0
        else:  # a branch: the first column right of its producer free at this row
            c = col[n.inputs[0]] + 1
            while (c, r) in taken:
                c += 1
        while (c, r) in taken:
            r += 1
        row[n.name], col[n.name] = r, c
        taken.add((c, r))
    return row, col


def _assign_lanes(edges, row, col) -> dict:
    """Greedy interval colouring: wires whose row spans overlap beside a column get own lanes."""
    lanes, busy = {}, {}  # busy[col] = [(start row, end row, lane)]
    for u, v in sorted(edges, key=lambda e: (row[e[0]], row[e[1]])):
        taken = {k for a, b, k in busy.get(col[v], []) if a < row[v] and row[u] < b}
        lanes[u, v] = next(k for k in range(len(taken) + 1) if k not in taken)
        busy.setdefault(col[v], []).append((row[u], row[v], lanes[u, v]))
    return lanes


def draw(spec, collapse: bool = False) -> Scene:
    """The diagram of a validated spec."""
    loss = getattr(spec.loss, "type", "output")
    return layout(graph(spec, collapse), spec.name, spec.input.shape, f"{loss} loss")


def save(scene: Scene, path: str | Path, fmt: str = "svg") -> Path:
    """Write the scene as SVG or PNG atomically; only replace a file netspec drew."""
    return write_file(path, to_png(scene) if fmt == "png" else to_svg(scene), MARK)
