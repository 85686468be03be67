"""`netspec draw`: the SVG is parsed and checked against the spec's shape inference.

Every spec in specs/ is drawn; the graph layout (skip lanes, branch columns, collapsed blocks)
is checked on hand-made DAGs until graph specs exist.
"""

import itertools
import re
import xml.etree.ElementTree as ET

import pytest
from conftest import SPECS
from typer.testing import CliRunner

import netspec
from netspec.cli import app
from netspec.viz.draw import Node, collapse_blocks, detail, draw, layout, save, shape_text
from netspec.viz.scene import text_width, to_svg

SVG = "{http://www.w3.org/2000/svg}"


def parse(scene):
    return ET.fromstring(to_svg(scene))


def groups(root, cls):
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == cls]


def texts(root, cls):
    return [t for t in root.iter(f"{SVG}text") if t.get("class") == cls]


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_spec_draws_with_its_inferred_shapes(path):
    spec = netspec.load(path)
    infos = spec.infos
    root = parse(draw(spec))
    nodes = {g.get("data-name"): g for g in groups(root, "node")}
    assert list(nodes) == ["input", *(i.name for i in infos), "output"]
    for info in infos:
        g = nodes[info.name]
        assert g.get("data-type") == info.type
        assert int(g.get("data-params")) == info.params
        name = [t.text for t in g.iter(f"{SVG}text") if t.get("class") == "node-name"]
        assert name == [info.name]
        if info.params:  # the parameter count is printed in the box
            assert f"{info.params:,} params" in [t.text for t in g.iter(f"{SVG}text")]
    # one shape label per producer, equal to the inferred output shape
    labels = {t.get("data-from"): t.text for t in texts(root, "edge-label")}
    expected = {"input": shape_text(spec.input.shape)}
    expected.update({i.name: shape_text(i.out_shape) for i in infos})
    assert labels == expected
    # every wire carries its producer's shape; wires follow the producers (for a sequential
    # spec, the layer above; for a graph spec, the layer's `inputs`)
    edges = [(g.get("data-from"), g.get("data-to"), g.get("data-shape"))
             for g in groups(root, "edge")]
    wanted, previous = [], "input"
    for info in infos:
        wanted += [(p, info.name) for p in getattr(info, "inputs", None) or (previous,)]
        previous = info.name
    assert sorted((a, b) for a, b, _ in edges) == sorted([*wanted, (previous, "output")])
    assert all(shape == expected[a] for a, _, shape in edges)
    # totals
    assert int(root.get("data-params")) == sum(i.params for i in infos)
    assert int(root.get("data-macs")) == sum(i.macs for i in infos)
    totals = texts(root, "totals")[0].text
    assert f"{sum(i.params for i in infos):,} parameters" in totals
    assert f"{len(infos)} layers" in totals
    assert_no_overlaps(root)
    assert_no_external_refs(to_svg(draw(spec)))
    collapsed = parse(draw(spec, collapse=True))  # repeated blocks, if any, become one box
    assert int(collapsed.get("data-params")) == int(root.get("data-params"))
    assert collapsed.get("data-layers") == str(len(infos))
    assert_no_overlaps(collapsed)


def boxes(root):
    """Estimated bounding boxes of every text and node rectangle: (x0, y0, x1, y1, what)."""
    out = []
    for t in root.iter(f"{SVG}text"):
        size = float(t.get("font-size"))
        w = text_width(t.text or "", size, bold=t.get("font-weight") == "bold",
                       mono="Mono" in t.get("font-family"))
        x, y = float(t.get("x")), float(t.get("y"))
        x0 = {"start": x, "end": x - w, "middle": x - w / 2}[t.get("text-anchor")]
        out.append((x0, y - 0.8 * size, x0 + w, y + 0.25 * size, f"text {t.text!r}"))
    return out


def assert_no_overlaps(root):
    items = boxes(root)
    for a, b in itertools.combinations(items, 2):
        overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
        assert not overlap, f"{a[4]} overlaps {b[4]}"
    rects = [g.find(f"{SVG}rect") for g in groups(root, "node")]
    frames = [tuple(float(r.get(k)) for k in ("x", "y", "width", "height")) for r in rects]
    for (x, y, w, h), (u, v, p, q) in itertools.combinations(frames, 2):
        assert not (x < u + p and u < x + w and y < v + q and v < y + h), "boxes overlap"
    labels = [b for b, t in zip(items, root.iter(f"{SVG}text")) if t.get("class") == "edge-label"]
    for x0, y0, x1, y1, what in labels:
        for x, y, w, h in frames:
            assert not (x0 < x + w and x < x1 and y0 < y + h and y < y1), f"{what} on a box"
    width, height = float(root.get("width")), float(root.get("height"))
    for x0, y0, x1, y1, what in items:
        assert 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height, f"{what} is cut off"


def assert_no_external_refs(text):
    assert "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in text and "href" not in text


def test_the_overlap_check_can_fail(monkeypatch):
    import netspec.viz.draw

    monkeypatch.setattr(netspec.viz.draw, "GAP", 6)  # rows too close for the shape labels
    with pytest.raises(AssertionError, match="overlaps|on a box"):
        assert_no_overlaps(parse(draw(netspec.load(SPECS[0].parent / "lenet.yaml"))))


def test_detail_names_the_key_settings():
    spec = netspec.load(SPECS[0].parent / "tiny-zoo.yaml")
    assert detail(spec.layers[0]) == "5×5, 8, stride 2, pad 2"
    assert detail(spec.layers[3]) == "3×3, 16, pad same, dilation 2"
    assert detail(spec.layers[2]) == "p 0.1"
    assert detail(spec.layers[7]) == "64"


def chain(prefix, src, n=3):
    names = [f"{prefix}.conv{i}" for i in range(n)]
    return [Node(name, "conv2d", "3×3, 8", 10, 100, (8, 4, 4), (p,), "conv")
            for name, p in zip(names, [src, *names])]


def resnet():
    """stem -> two identical residual blocks -> a block with a projection shortcut -> fc."""
    nodes = [Node("stem", "conv2d", "3×3, 8", 80, 1000, (8, 4, 4), ("input",), "conv")]
    src = "stem"
    for block in ("layer1.0", "layer1.1"):
        nodes += chain(block, src)
        nodes.append(Node(f"{block}.add", "add", "", 0, 0, (8, 4, 4),
                          (f"{block}.conv2", src), "merge"))
        src = f"{block}.add"
    nodes += chain("layer2.0", src)
    nodes.append(Node("layer2.0.down", "conv2d", "1×1, 8", 8, 10, (8, 4, 4), (src,), "conv"))
    nodes.append(Node("layer2.0.add", "add", "", 0, 0, (8, 4, 4),
                      ("layer2.0.conv2", "layer2.0.down"), "merge"))
    nodes.append(Node("fc", "linear", "10", 1290, 1280, (10,), ("layer2.0.add",), "dense"))
    return nodes


def test_skip_edges_run_in_lanes_and_branches_in_columns():
    root = parse(layout(resnet(), "resnet", (1, 4, 4)))
    edges = {(g.get("data-from"), g.get("data-to")): g for g in groups(root, "edge")}
    assert ("stem", "layer1.0.add") in edges and ("layer1.0.add", "layer1.1.add") in edges
    rects = {g.get("data-name"): g.find(f"{SVG}rect") for g in groups(root, "node")}

    def end(edge):  # the last point of the wire's polyline, before the arrowhead
        pts = edge.find(f"{SVG}polyline").get("points").split()
        return tuple(map(float, pts[-1].split(",")))

    add = rects["layer1.0.add"]
    x_right = float(add.get("x")) + float(add.get("width"))
    assert end(edges["stem", "layer1.0.add"])[0] > x_right  # enters from the side (a lane)
    assert end(edges["layer1.0.conv2", "layer1.0.add"])[0] < x_right  # straight, from above
    down, conv = rects["layer2.0.down"], rects["layer2.0.conv0"]
    assert float(down.get("x")) > float(conv.get("x"))  # the projection opens a column
    assert down.get("y") == conv.get("y")  # beside the main path, not below it
    assert_no_overlaps(root)


def test_repeated_blocks_collapse():
    nodes = collapse_blocks(resnet())
    names = [n.name for n in nodes]
    assert "layer1" in names and not any(n.startswith("layer1.") for n in names)
    assert "layer2.0.down" in names  # a single instance stays expanded
    block = nodes[names.index("layer1")]
    assert block.repeat == 2 and block.layers == 8
    assert block.params == 2 * 3 * 10 and block.inputs == ("stem",)
    assert nodes[names.index("layer2.0.conv0")].inputs == ("layer1",)
    root = parse(layout(nodes, "resnet", (1, 4, 4)))
    g = next(g for g in groups(root, "node") if g.get("data-name") == "layer1")
    assert g.get("data-repeat") == "2"
    assert "layer1 ×2" in [t.text for t in g.iter(f"{SVG}text")]
    assert root.get("data-layers") == str(len(resnet()))
    assert_no_overlaps(root)


def test_blocks_that_differ_stay_expanded():
    nodes = resnet()
    nodes[1] = Node("layer1.0.conv0", "conv2d", "5×5, 8", 10, 100, (8, 4, 4), ("stem",))
    assert [n.name for n in collapse_blocks(nodes)] == [n.name for n in nodes]


def test_cli_draws_svg_and_png_and_keeps_foreign_files(tmp_path):
    spec = SPECS[0].parent / "lenet.yaml"
    runner = CliRunner()
    svg, png = tmp_path / "net.svg", tmp_path / "net.png"
    assert runner.invoke(app, ["draw", str(spec), "-o", str(svg)]).exit_code == 0
    ET.parse(svg)
    result = runner.invoke(app, ["draw", str(spec), "-o", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert runner.invoke(app, ["draw", str(spec), "-o", str(png)]).exit_code == 0  # ours
    foreign = tmp_path / "notes.svg"
    foreign.write_text("my notes")
    result = runner.invoke(app, ["draw", str(spec), "-o", str(foreign)])
    assert result.exit_code == 1 and "not written by netspec" in result.output
    assert foreign.read_text() == "my notes"
    result = runner.invoke(app, ["draw", str(spec), "-o", str(svg), "--format", "gif"])
    assert result.exit_code == 2


@pytest.mark.parametrize("name, fmt", [("net.pdf", None), ("net", None), ("net.svg", "png"),
                                       ("net.png", "svg")])
def test_a_file_name_that_disagrees_with_the_format_is_a_usage_error(tmp_path, name, fmt):
    spec = SPECS[0].parent / "lenet.yaml"
    args = ["draw", str(spec), "-o", str(tmp_path / name)] + (["--format", fmt] if fmt else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert list(tmp_path.iterdir()) == []  # nothing written under a misleading name


def test_an_explicit_format_may_name_any_file(tmp_path):
    spec = SPECS[0].parent / "lenet.yaml"
    result = CliRunner().invoke(app, ["draw", str(spec), "-o", str(tmp_path / "net.img"),
                                      "--format", "svg"])
    assert result.exit_code == 0, result.output
    ET.parse(tmp_path / "net.img")


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    spec = netspec.load(SPECS[0].parent / "mlp.yaml")
    save(draw(spec), tmp_path / "a.svg")
    assert [p.name for p in tmp_path.iterdir()] == ["a.svg"]


def test_a_bad_spec_is_an_error_not_a_picture(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ninput: {shape: [1, 28, 28]}\nlayers:\n"
                   "  - {type: linear, name: fc, out_features: 10}\n")
    out = tmp_path / "bad.svg"
    result = CliRunner().invoke(app, ["draw", str(bad), "-o", str(out)])
    assert result.exit_code == 1 and "flatten" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_boxes_have_tooltips_with_shapes():
    spec = netspec.load(SPECS[0].parent / "lenet.yaml")
    root = parse(draw(spec))
    conv1 = next(g for g in groups(root, "node") if g.get("data-name") == "conv1")
    tip = conv1.find(f"{SVG}title").text
    assert "in: input 1×28×28" in tip and "out: 6×28×28" in tip and "117,600 MACs" in tip


BAD = sorted((SPECS[0].parent.parent / "tests" / "bad_specs").glob("*.yaml"))


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_specs_exit_1_without_traceback(tmp_path, path):
    result = CliRunner().invoke(app, ["draw", str(path), "-o", str(tmp_path / "x.svg")])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "x.svg").exists()


def _is_graph(path):
    return any(len(getattr(i, "inputs", ()) or ()) > 1 for i in netspec.load(path).infos)


GRAPHS = [pytest.param(p, id=p.stem) for p in SPECS if _is_graph(p)] or [pytest.param(
    None, marks=pytest.mark.skip(reason="no graph spec (a layer with 2+ inputs) in specs/ yet"))]


@pytest.mark.parametrize("path", GRAPHS)
def test_graph_specs_draw_every_input_and_collapse_blocks(path):
    spec = netspec.load(path)
    root = parse(draw(spec))
    edges = {(g.get("data-from"), g.get("data-to")) for g in groups(root, "edge")}
    merges = [i for i in spec.infos if len(i.inputs) > 1]
    for info in merges:  # every producer of a merge is wired to it
        assert {(p, info.name) for p in info.inputs} <= edges
    assert_no_overlaps(root)
    collapsed = parse(draw(spec, collapse=True))
    copies = {}  # block -> copy index -> [(name inside the copy, type, settings)]
    for i in spec.infos:
        m = re.match(r"^(.+?)\.(\d+)\.(.+)$", i.name)
        if m:
            copies.setdefault(m[1], {}).setdefault(m[2], []).append(
                (m[3], i.type, detail(i.layer)))
    names = {g.get("data-name") for g in groups(collapsed, "node")}
    for block, found in copies.items():  # identical copies become one box 'block ×n'
        same = len(found) > 1 and len({tuple(c) for c in found.values()}) == 1
        assert (block in names) == same, block
    assert_no_overlaps(collapsed)
