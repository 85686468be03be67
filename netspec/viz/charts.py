"""Small charts for run reports, drawn as Scenes (netspec/viz/scene.py), so they inline as SVG.

    line_chart({"train": [(1, 0.2), (2, 0.1)], ...}, "loss", "epoch")
    confusion(matrix, class_names)      # heat map with counts and per-class accuracy

Nothing here reads files or knows about runs; report.py feeds in the numbers.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np

from netspec.viz.scene import Scene, text_width

INK, MUTED, GRID = "#1f2933", "#5c6670", "#e3e6ea"
SERIES = {"train": "#3b6fb6", "val": "#7a55ad", "test": "#c9732c", "lr": "#2a8c7a"}


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About n round ticks (steps of 1, 2 or 5 times a power of 10) from <= lo to >= hi."""
    if not hi > lo:  # one value: a band around it
        span = abs(lo) / 2 or 1.0
        lo, hi = lo - span, hi + span
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1, round(step))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _fmt(v: float, percent: bool, digits: int = 0) -> str:
    """A tick label; `digits` more significant digits than the shortest form."""
    if percent:
        return f"{100 * v:.{3 + digits}g}%"
    if v and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.{digits}e}"
    return f"{v:.{4 + digits}g}"


def tick_labels(ticks: list[float], percent: bool = False) -> list[str]:
    """Labels of a row of ticks: the shortest form in which every label differs from the
    others and reads back as its tick (within a thousandth of a step), so that close ticks
    such as 1e-07 and 1.2e-07 do not both read '1e-07'."""
    step = min((b - a for a, b in pairwise(ticks)), default=0) or 1.0
    labels = [_fmt(t, percent) for t in ticks]
    for digits in range(12):
        labels = [_fmt(t, percent, digits) for t in ticks]
        values = [float(x.rstrip("%")) / (100 if percent else 1) for x in labels]
        exact = all(abs(v - t) <= step / 1000 for v, t in zip(values, ticks))
        if exact and len(set(labels)) == len(labels):
            break
    return labels


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str,
               percent: bool = False, steps: bool = False, width: int = 340,
               height: int = 230) -> Scene:
    """Lines with dots, one per named series, on round-numbered axes.

    steps=True joins the dots as a staircase that changes at each new point (for values that
    hold over an epoch, such as the learning rate).
    """
    scene = Scene(width, height)
    scene.meta.update(title=title, series=",".join(series))
    pts = [p for s in series.values() for p in s]
    left, right, top, bottom = 58, 14, 34, 40
    scene.text(left, 20, title, 13, INK, bold=True, cls="chart-title")
    if not pts:
        scene.text(width / 2, height / 2, "no data yet", 12, MUTED, anchor="middle")
        return scene
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xt = nice_ticks(min(xs), max(xs), 6, integer=True)
    yt = nice_ticks(min(ys), max(ys), 5)
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = width - left - right, height - top - bottom

    def px(x):
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def py(y):
        return top + ph - (y - y0) / ((y1 - y0) or 1) * ph

    for t, label in zip(yt, tick_labels(yt, percent)):
        scene.line([(left, py(t)), (left + pw, py(t))], GRID)
        scene.text(left - 6, py(t) + 4, label, 10, MUTED, anchor="end", mono=True, cls="tick")
    for t in xt:
        scene.text(px(t), top + ph + 15, f"{t:g}", 10, MUTED, anchor="middle", mono=True,
                   cls="tick")
    scene.line([(left, top + ph), (left + pw, top + ph)], MUTED)
    scene.text(left + pw / 2, height - 6, xlabel, 11, MUTED, anchor="middle")
    lx = width - right
    for name in reversed(list(series)):  # legend, right-aligned in the title row
        colour = SERIES.get(name, INK)
        scene.text(lx, 20, name, 11, colour, anchor="end", bold=True, cls="legend")
        lx -= text_width(name, 11, bold=True) + 12
    for name, points in series.items():
        colour = SERIES.get(name, INK)
        with scene.group("series", {"name": name, "points": len(points)}):
            path = [(px(x), py(y)) for x, y in points]
            if steps:  # (x0, y0) (x0, y1) (x1, y1) ...
                corners = [q for a, b in pairwise(path) for q in (a, (a[0], b[1]))]
                path = corners + path[-1:]
            scene.line(path, colour, 2)
            for x, y in points:
                scene.rect(px(x) - 2.5, py(y) - 2.5, 5, 5, colour, colour, rx=2.5)
    return scene


def confusion(matrix: np.ndarray, names: list[str], cell: int = 34) -> Scene:
    """Heat map of counts (rows true, columns predicted): the diagonal in blue, errors in
    orange scaled to the largest error; a last column gives each class's accuracy."""
    k = len(matrix)
    names = [n if n == str(i) else f"{n} ({i})" for i, n in enumerate(names)]
    label_w = max(text_width(n, 11) for n in names) + 10
    left, top = 28 + label_w, 58
    acc_w = 64
    width, height = left + k * cell + acc_w + 16, top + k * cell + 16
    scene = Scene(width, height)
    totals = matrix.sum(1)
    scene.meta.update(classes=k, total=int(matrix.sum()), correct=int(np.trace(matrix)))
    scene.text(left + k * cell / 2, 16, "predicted", 11, MUTED, anchor="middle")
    scene.text(12, top - 8, "true", 11, MUTED)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    worst = max(int(off.max()), 1)
    for j in range(k):  # columns by index: names would collide in a cell's width
        scene.text(left + j * cell + cell / 2, top - 10, str(j), 11, INK, anchor="middle",
                   cls="col-label")
    scene.text(left + k * cell + 10, top - 10, "accuracy", 11, MUTED, cls="col-label")
    for i in range(k):
        y = top + i * cell
        scene.text(left - 8, y + cell / 2 + 4, names[i], 11, INK, anchor="end", cls="row-label")
        for j in range(k):
            v = int(matrix[i, j])
            if i == j:
                frac = v / max(int(totals[i]), 1)
                fill = _mix("#ffffff", "#2f5f9e", 0.25 + 0.75 * frac)
            else:
                fill = _mix("#ffffff", "#d9662b", (v / worst) ** 0.6) if v else "#fafbfc"
            dark = (i == j) or v / worst > 0.55
            with scene.group("cell", {"true": i, "pred": j, "count": v}):
                scene.rect(left + j * cell, y, cell, cell, fill, "#ffffff", rx=0)
                if v:
                    scene.text(left + j * cell + cell / 2, y + cell / 2 + 4, str(v),
                               10 if v < 10000 else 8, "#ffffff" if dark else INK,
                               anchor="middle", mono=True)
        acc = matrix[i, i] / totals[i] if totals[i] else float("nan")
        scene.text(left + k * cell + 10, y + cell / 2 + 4,
                   f"{100 * acc:.1f}%" if totals[i] else "-", 11, INK, mono=True,
                   cls="class-acc", data={"class": i})
    return scene


def _mix(a: str, b: str, t: float) -> str:
    """The colour t of the way from hex colour a to b."""
    t = min(max(t, 0.0), 1.0)
    ca = [int(a[i:i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb))
