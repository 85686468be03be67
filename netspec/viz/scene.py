"""A tiny vector scene (boxes, wires, text at pixel positions) written as SVG or PNG.

Diagrams and charts build a Scene; `to_svg` writes it as a standalone SVG string with explicit
attributes (no CSS, no scripts, no external references, so it can be inlined in HTML), and
`to_png` redraws the same items with matplotlib's Agg canvas. Text widths are estimated from
character classes, generously, since the browser picks the actual font.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from netspec.errors import OutputError, Problem

MARK = "netspec-figure"  # in every SVG's class and every PNG's metadata: "netspec drew this"
SANS = "DejaVu Sans, Helvetica, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"


def text_width(text: str, size: float, bold: bool = False, mono: bool = False) -> float:
    """Estimated rendered width in px (slightly above DejaVu Sans / Arial metrics)."""
    if mono:
        return 0.62 * size * len(text)
    em = 0.0
    for ch in text:
        if ch in "il.,:;'|!() ":
            em += 0.34
        elif ch in "mwMW@%":
            em += 0.92
        elif ch.isupper() or ch in "×→":
            em += 0.74
        else:
            em += 0.6
    return em * size * (1.08 if bold else 1.0)


@dataclass
class Scene:
    width: float
    height: float
    items: list = field(default_factory=list)  # dicts; "group" items hold their own "items"
    meta: dict = field(default_factory=dict)  # written as data-* on the root element
    _stack: list = field(default_factory=list)

    def _add(self, item: dict) -> None:
        (self._stack[-1]["items"] if self._stack else self.items).append(item)

    @contextlib.contextmanager
    def group(self, cls: str, data: dict | None = None, tooltip: str = ""):
        """Items added inside the `with` block form one <g>; `tooltip` becomes its <title>."""
        g = {"kind": "group", "cls": cls, "data": data or {}, "items": [], "tooltip": tooltip}
        self._add(g)
        self._stack.append(g)
        try:
            yield g
        finally:
            self._stack.pop()

    def rect(self, x, y, w, h, fill, stroke, dashed=False, rx=5, cls="", data=None):
        self._add({"kind": "rect", "x": x, "y": y, "w": w, "h": h, "fill": fill,
                   "stroke": stroke, "dashed": dashed, "rx": rx, "cls": cls, "data": data or {}})

    def text(self, x, y, text, size, fill, bold=False, mono=False, anchor="start", cls="",
             data=None):
        self._add({"kind": "text", "x": x, "y": y, "text": str(text), "size": size,
                   "fill": fill, "bold": bold, "mono": mono, "anchor": anchor, "cls": cls,
                   "data": data or {}})

    def line(self, points, stroke, width=1.0, cls="", data=None):
        self._add({"kind": "line", "points": list(points), "stroke": stroke, "width": width,
                   "cls": cls, "data": data or {}})

    def wire(self, points, way, stroke, data):
        """A polyline ending in an arrowhead at its last point, pointing 'down' or 'left'."""
        tx, ty = points[-1]
        tri = ([(tx, ty), (tx - 4.5, ty - 8), (tx + 4.5, ty - 8)] if way == "down"
               else [(tx, ty), (tx + 8, ty - 4.5), (tx + 8, ty + 4.5)])
        with self.group("edge", data):
            end = points[-1]
            back = (end[0], end[1] - 7) if way == "down" else (end[0] + 7, end[1])
            self.line([*points[:-1], back], stroke, 1.3)
            self._add({"kind": "poly", "points": tri, "fill": stroke, "cls": "", "data": {}})


# ------------------------------------------------------------------ SVG


def _num(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _attrs(item) -> str:
    out = f' class="{item["cls"]}"' if item.get("cls") else ""
    for k, v in item.get("data", {}).items():
        out += f" data-{k}={quoteattr(str(v))}"
    return out


def _svg_item(item, lines, indent="  "):
    kind = item["kind"]
    if kind == "group":
        lines.append(f'{indent}<g{_attrs(item)}>')
        if item["tooltip"]:
            lines.append(f"{indent}  <title>{escape(item['tooltip'])}</title>")
        for child in item["items"]:
            _svg_item(child, lines, indent + "  ")
        lines.append(f"{indent}</g>")
    elif kind == "rect":
        dash = ' stroke-dasharray="5 3"' if item["dashed"] else ""
        lines.append(f'{indent}<rect{_attrs(item)} x="{_num(item["x"])}" y="{_num(item["y"])}" '
                     f'width="{_num(item["w"])}" height="{_num(item["h"])}" rx="{item["rx"]}" '
                     f'fill="{item["fill"]}" stroke="{item["stroke"]}"{dash}/>')
    elif kind == "text":
        family = MONO if item["mono"] else SANS
        weight = ' font-weight="bold"' if item["bold"] else ""
        lines.append(f'{indent}<text{_attrs(item)} x="{_num(item["x"])}" y="{_num(item["y"])}" '
                     f'font-family="{family}" font-size="{item["size"]}"{weight} '
                     f'fill="{item["fill"]}" text-anchor="{item["anchor"]}">'
                     f'{escape(item["text"])}</text>')
    elif kind == "line":
        pts = " ".join(f"{_num(x)},{_num(y)}" for x, y in item["points"])
        lines.append(f'{indent}<polyline{_attrs(item)} points="{pts}" fill="none" '
                     f'stroke="{item["stroke"]}" stroke-width="{item["width"]}"/>')
    elif kind == "poly":
        pts = " ".join(f"{_num(x)},{_num(y)}" for x, y in item["points"])
        lines.append(f'{indent}<polygon points="{pts}" fill="{item["fill"]}"/>')


def to_svg(scene: Scene, cls: str = MARK) -> str:
    """A standalone SVG document (also valid inline in HTML)."""
    w, h = _num(scene.width), _num(scene.height)
    data = "".join(f" data-{k}={quoteattr(str(v))}" for k, v in scene.meta.items())
    root = (f'<svg xmlns="http://www.w3.org/2000/svg" class="{cls}" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}"{data}>')
    lines = [root]
    if scene.meta.get("title"):
        lines.append(f"  <title>{escape(str(scene.meta['title']))}</title>")
    lines += [f'  <rect width="{w}" height="{h}" fill="#ffffff"/>']
    for item in scene.items:
        _svg_item(item, lines)
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ PNG (matplotlib)


def to_png(scene: Scene, scale: float = 2.0) -> bytes:
    """The scene drawn with matplotlib (Agg, no pyplot) as PNG bytes, `scale` px per unit."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, Polygon

    fig = Figure(figsize=(scene.width / 100, scene.height / 100), dpi=100 * scale)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, scene.width)
    ax.set_ylim(scene.height, 0)  # y grows downwards, as in SVG
    ax.axis("off")
    pt = 72 / 100  # one scene unit (px at 100 dpi) in points

    def draw(item):
        kind = item["kind"]
        if kind == "group":
            for child in item["items"]:
                draw(child)
        elif kind == "rect":
            r = min(item["rx"], item["w"] / 2, item["h"] / 2)
            ax.add_patch(FancyBboxPatch(
                (item["x"] + r, item["y"] + r), item["w"] - 2 * r, item["h"] - 2 * r,
                boxstyle=f"round,pad={r}", facecolor=item["fill"], edgecolor=item["stroke"],
                linewidth=0.8, linestyle="--" if item["dashed"] else "-"))
        elif kind == "text":
            ax.text(item["x"], item["y"], item["text"], fontsize=item["size"] * pt,
                    color=item["fill"], ha={"start": "left", "end": "right"}.get(
                        item["anchor"], "center"), va="baseline",
                    family="DejaVu Sans Mono" if item["mono"] else "DejaVu Sans",
                    weight="bold" if item["bold"] else "normal")
        elif kind == "line":
            xs, ys = zip(*item["points"])
            ax.plot(xs, ys, color=item["stroke"], linewidth=item["width"] * pt)
        elif kind == "poly":
            ax.add_patch(Polygon(item["points"], closed=True, facecolor=item["fill"],
                                 edgecolor="none"))

    for item in scene.items:
        draw(item)
    buffer = io.BytesIO()
    fig.savefig(buffer, facecolor="white", format="png", metadata={"Software": MARK})
    return buffer.getvalue()


# ------------------------------------------------------------------ files


def write_file(path: str | Path, data: bytes | str, marker: str | None) -> Path:
    """Create or replace `path` atomically (netspec.fsio). With a `marker`, an existing file is
    only replaced when its first 4 kB contain the marker, i.e. netspec wrote it; otherwise an
    OutputError, and the file is kept."""
    from netspec.fsio import atomic_write, os_problem

    path = Path(path)
    if marker and path.is_file() and not _has(path, marker):
        raise OutputError([Problem("exists and was not written by netspec; choose another "
                                   "output or move the file away", file=str(path))])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError([os_problem(e, path.parent, "create the directory")]) from None
    return atomic_write(path, data)


def _has(path: Path, marker: str) -> bool:
    try:
        with open(path, "rb") as f:
            return marker.encode() in f.read(4096)
    except OSError:
        return False
