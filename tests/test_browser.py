"""Diagrams and reports in a real browser: headless Chromium (Debian's package) via Playwright.

Checks what only a renderer can: no console errors, no requests beyond the file itself, every
figure has a size, and, with the browser's real fonts, no edge label overlaps another label or
a box and every box's text stays inside its box. Screenshots are saved as test artifacts under
pytest's base temp dir: <basetemp>/screenshots0/*.png (pass --basetemp DIR to keep them).
One browser is launched for the whole module.
"""

import itertools
import shutil

import pytest
from conftest import SPECS

import netspec
from netspec.train.run import Run
from netspec.viz.draw import draw, layout, save
from netspec.viz.report import write_report

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e '.[browser]')")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no `chromium` on PATH (Debian: apt-get install chromium; "
                             ".ci/run installs it); Playwright's own browser download is not used")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

GEOMETRY = """() => {
  const box = e => { const b = e.getBoundingClientRect();
                     return [b.left, b.top, b.right, b.bottom]; };
  return {
    svg: box(document.querySelector('svg')),
    labels: [...document.querySelectorAll('text.edge-label')].map(t => [...box(t), t.textContent]),
    nodes: [...document.querySelectorAll('g.node')].map(g => ({
      name: g.dataset ? g.getAttribute('data-name') : '',
      rect: box(g.querySelector('rect')),
      texts: [...g.querySelectorAll('text')].filter(t => t.textContent).map(
        t => [...box(t), t.textContent])})),
  };
}"""

SIZES = """() => [...document.querySelectorAll('figure, svg, img')].map(e => {
  const b = e.getBoundingClientRect();
  return [e.tagName, e.getAttribute('class') || '', b.width, b.height,
          e.tagName === 'IMG' ? e.naturalWidth : -1];
})"""


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


def visit(browser, path, width=1200, height=900):
    """Open a local file; return the page, console/page errors and requested URLs."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    return page, errors, requests


def overlap(a, b, slack=0.5):
    return a[0] + slack < b[2] and b[0] + slack < a[2] and a[1] + slack < b[3] and \
        b[1] + slack < a[3]


def check_diagram(browser, svg_path, shot):
    width, height = (int(float(v)) + 1 for v in _size(svg_path))
    page, errors, requests = visit(browser, svg_path, width, height)
    g = page.evaluate(GEOMETRY)
    page.screenshot(path=str(shot))
    page.close()
    assert errors == []
    assert requests == [svg_path.as_uri()]
    x0, y0, x1, y1 = g["svg"]
    assert x1 - x0 > 0 and y1 - y0 > 0
    assert g["labels"] and g["nodes"]
    for a, b in itertools.combinations(g["labels"], 2):
        assert not overlap(a, b), f"edge labels {a[4]!r} and {b[4]!r} overlap"
    for label in g["labels"]:
        for node in g["nodes"]:
            assert not overlap(label, node["rect"]), f"label {label[4]!r} on {node['name']}"
    for node in g["nodes"]:
        r = node["rect"]
        for t in node["texts"]:
            assert r[0] <= t[0] and t[2] <= r[2], f"{t[4]!r} sticks out of {node['name']}"
        for a, b in itertools.combinations(node["texts"], 2):
            assert not overlap(a, b), f"{a[4]!r} and {b[4]!r} overlap in {node['name']}"
    for t in [*g["labels"], *(t for n in g["nodes"] for t in n["texts"])]:
        assert x0 <= t[0] and t[2] <= x1 and y0 <= t[1] and t[3] <= y1, f"{t[4]!r} cut off"


def _size(svg_path):
    import xml.etree.ElementTree as ET

    root = ET.parse(svg_path).getroot()
    return root.get("width"), root.get("height")


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_draw_svg_in_chromium(browser, shots, tmp_path, path):
    svg = save(draw(netspec.load(path)), tmp_path / f"{path.stem}.svg")
    check_diagram(browser, svg, shots / f"draw-{path.stem}.png")


def test_graph_layout_in_chromium(browser, shots, tmp_path):
    from test_draw import resnet

    from netspec.viz.draw import collapse_blocks

    for name, nodes in (("resnet", resnet()), ("resnet-collapsed", collapse_blocks(resnet()))):
        svg = save(layout(nodes, name, (1, 4, 4)), tmp_path / f"{name}.svg")
        check_diagram(browser, svg, shots / f"draw-{name}.png")


def test_report_in_chromium(browser, shots, tmp_path, tiny_splits):
    text = (SPECS[0].parent / "lenet.yaml").read_text()
    spec = netspec.loads(text, "lenet.yaml", ["train.epochs=2", f"data.dataset={_tiny()}"])
    run = Run(spec, tiny_splits, tmp_path / "run")
    run.start()
    run.fit()
    run.trainer.close()
    html = write_report(tmp_path / "run", tiny_splits)
    page, errors, requests = visit(browser, html)
    sizes = page.evaluate(SIZES)
    page.screenshot(path=str(shots / "report.png"), full_page=True)
    page.close()
    assert errors == []
    assert [u for u in requests if not u.startswith("data:")] == [html.as_uri()]
    kinds = {(tag, cls) for tag, cls, *_ in sizes}
    assert ("IMG", "") in kinds and ("svg", "netspec-figure") in kinds
    assert sum(1 for tag, cls, *_ in sizes if cls == "figure") == 5  # 3 curves, matrix, net
    for tag, cls, w, h, natural in sizes:
        assert w > 0 and h > 0, f"{tag}.{cls} has no rendered size"
        assert natural != 0, "an image did not decode"


def _tiny():
    from conftest import TINY

    return TINY
