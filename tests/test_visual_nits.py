"""Visual nits of issue 23: chart tick labels are distinct and exact, no wire of a diagram
crosses another wire on its way to a different box, and --collapse merges a block used
several times without `repeat`."""

import re
import xml.etree.ElementTree as ET
from itertools import pairwise

import pytest
from conftest import SPECS

import netspec
from netspec.viz import charts
from netspec.viz.draw import collapse_blocks, draw, graph
from netspec.viz.scene import to_svg

SVG = "{http://www.w3.org/2000/svg}"


def tick_texts(scene, axis="y"):
    texts = [i for i in scene.items if i["kind"] == "text" and i.get("cls") == "tick"]
    anchor = "end" if axis == "y" else "middle"
    return [t["text"] for t in texts if t["anchor"] == anchor]


@pytest.mark.parametrize("values", [
    [1e-7, 1.2e-7, 1.4e-7],                 # a cosine schedule's last epochs
    [1e-7],                                 # one epoch at a tiny rate
    [0.1, 0.1 + 1e-6],
    [1e-3, 9e-4, 8e-4],
    [2e5, 2.1e5],
])
def test_tick_labels_are_distinct_and_exact(values):
    scene = charts.line_chart({"lr": list(enumerate(values, 1))}, "learning rate", "epoch",
                              steps=True)
    labels = tick_texts(scene)
    assert len(labels) == len(set(labels)), labels
    ticks = charts.nice_ticks(min(values), max(values), 5)
    for label, tick in zip(labels, ticks):
        assert abs(float(label) - tick) <= 1e-9 * max(abs(tick), 1e-30) + 1e-3 * (
            ticks[1] - ticks[0]), (label, tick)


def test_percent_tick_labels_are_distinct():
    scene = charts.line_chart({"test": [(1, 0.99101), (2, 0.99102), (3, 0.99104)]},
                              "accuracy", "epoch", percent=True)
    labels = tick_texts(scene)
    assert len(labels) == len(set(labels)), labels


def _segments(root):
    """(from, to, (x0, y0), (x1, y1)) for every straight piece of every wire."""
    out = []
    for g in root.iter(f"{SVG}g"):
        if g.get("class") != "edge":
            continue
        line = g.find(f"{SVG}polyline")
        points = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
        out += [(g.get("data-from"), g.get("data-to"), a, b) for a, b in pairwise(points)]
    return out


def crossings(root):
    found = []
    segs = _segments(root)
    for fa, ta, a0, a1 in segs:
        if a0[1] != a1[1]:
            continue  # a is horizontal
        lo, hi = sorted((a0[0], a1[0]))
        for fb, tb, b0, b1 in segs:
            if b0[0] != b1[0] or b0[1] == b1[1] or ta == tb or fa == fb:
                continue  # b is vertical, to another box, from another producer
            top, bottom = sorted((b0[1], b1[1]))
            if lo < b0[0] < hi and top <= a0[1] <= bottom:  # a bend of b counts too
                found.append(f"{fa}->{ta} crosses {fb}->{tb} at ({b0[0]:.0f}, {a0[1]:.0f})")
    return found


def test_no_wire_of_the_inception_diagram_crosses_another():
    spec = netspec.load(SPECS[0].parent / "inception-mini.yaml")
    root = ET.fromstring(to_svg(draw(spec)))
    assert crossings(root) == []


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_no_branch_wire_crosses_another_in_any_spec(path):
    root = ET.fromstring(to_svg(draw(netspec.load(path))))
    assert crossings(root) == []


TWICE = """
name: twice
input: {shape: [1, 8, 8]}
blocks:
  unit:
    layers:
      - {type: conv2d, name: conv, out_channels: 2, kernel_size: 3, padding: 1}
      - {type: relu, name: act}
layers:
  - {block: unit, name: first}
  - {block: unit, name: second}
  - {block: unit, name: third}
  - {type: flatten}
  - {type: linear, out_features: 10}
data: {dataset: custom, num_classes: 10}
"""


def test_collapse_merges_a_block_used_several_times_without_repeat():
    spec = netspec.loads(TWICE, "twice.yaml")
    nodes = graph(spec, collapse=True)
    names = [n.name for n in nodes]
    assert not any(re.match(r"(first|second|third)\.", n) for n in names), names
    block = next(n for n in nodes if n.type == "block")
    assert block.repeat == 3 and block.layers == 6
    assert block.params == sum(i.params for i in spec.infos if i.type == "conv2d")
    assert nodes[names.index(block.name) + 1].inputs == (block.name,)
    root = ET.fromstring(to_svg(draw(spec, collapse=True)))
    titles = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "node-name"]
    assert f"{block.name} ×3" in titles, titles


def test_uses_that_differ_stay_apart():
    spec = netspec.loads(TWICE.replace("  - {block: unit, name: second}",
                                       "  - {block: unit, name: second}\n"
                                       "  - {type: maxpool2d, kernel_size: 2}"), "t.yaml")
    names = [n.name for n in graph(spec, collapse=True)]
    # first and second are consecutive and alike: one box; third comes after a pool: its own
    assert "third.conv" in names and "first.conv" not in names, names
    assert collapse_blocks(graph(spec)) == graph(spec, collapse=True)
