"""Run reports: one self-contained HTML file per run, readable offline with no JavaScript.

    write_report(run_dir, splits)        # report.html: summary, diagram, curves, confusion
                                         # matrix, worst test images, resolved spec
    write_eval_report(out_dir, ...)      # eval-report.html: the confusion matrix and the worst
                                         # images of one checkpoint on one split
    evaluate_samples(spec, state, x, y)  # the eval pass behind both: per-sample predictions
                                         # and losses

Everything is inline: figures are SVG (netspec/viz/draw.py, netspec/viz/charts.py) and the sample
images are PNG data URIs, so the file makes no requests. A run still going, or interrupted,
gets a report of what its directory holds so far.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
import zlib
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from netspec import checkpoint
from netspec.errors import CheckpointError
from netspec.viz import charts, draw
from netspec.viz.scene import to_svg, write_file

GENERATOR = "netspec report"  # in every report's <meta name="generator">: "netspec wrote this"
CLASS_NAMES = {"fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]}
WORST = 24  # images in the worst-losses grid


@dataclass
class Samples:
    """One eval pass, per sample: what the network predicted and what it cost."""

    labels: np.ndarray  # (N,) int
    predictions: np.ndarray  # (N,) int
    losses: np.ndarray  # (N,) the spec's loss of each sample alone
    confidence: np.ndarray  # (N,) probability of the predicted class (the loss's view)
    classes: int

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predictions == self.labels))

    @property
    def matrix(self) -> np.ndarray:
        from netspec.train.trainer import confusion_matrix

        return confusion_matrix(self.labels, self.predictions, self.classes)


def evaluate_samples(spec, state: dict, x: np.ndarray, y: np.ndarray, source: str = "state",
                     batch: int = 1000) -> Samples:
    """Eval-mode forward over (x, y) with the parameters in `state`: (N, K) logits per batch."""
    from netspec.plan.compiler import compile

    plan = compile(spec)
    plan.load_state_dict(state, source)
    n, k = len(y), spec.infos[-1].out_shape[0]
    preds, losses, conf = np.empty(n, np.int64), np.empty(n), np.empty(n)
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(0, n, batch):
            logits = plan.forward(x[i:i + batch], train=False).astype(np.float64)  # (B, K)
            labels = y[i:i + batch]
            probs = spec.loss.probabilities(logits)  # (B, K): softmax, unless the net ends in one
            preds[i:i + batch] = probs.argmax(1)
            conf[i:i + batch] = probs.max(1)
            losses[i:i + batch] = [spec.loss(logits[j:j + 1], labels[j:j + 1])[0]
                                   for j in range(len(labels))]
    return Samples(np.asarray(y, np.int64), preds, losses, conf, k)


# ------------------------------------------------------------------ reading a run


def read_history(run_dir: Path) -> list[dict]:
    """metrics.jsonl records; a torn last line (a run writing right now) is ignored.

    A file netspec did not write may hold anything, so only what a record of an epoch can
    be is kept: JSON objects with an integer `epoch` >= 1, and of their values the finite
    numbers (Infinity, NaN, null, strings and lists are dropped as absent)."""
    path = Path(run_dir) / "metrics.jsonl"
    records = []
    try:
        lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    except OSError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            break
        record = _epoch_record(record)
        if record is not None:
            records.append(record)
    return records


def _epoch_record(record) -> dict | None:
    if not isinstance(record, dict):
        return None
    kept = {k: v for k, v in record.items() if isinstance(k, str) and _number(v)}
    epoch = kept.get("epoch")
    if not isinstance(epoch, int) or epoch < 1:
        return None
    return kept


def _number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and abs(v) < 1e100)


def run_spec(run_dir: Path):
    """The resolved spec a run directory holds (spec.yaml)."""
    from netspec.fsio import RUN_MARKER, is_run_dir
    from netspec.spec.model import load

    path = Path(run_dir) / "spec.yaml"
    if not path.is_file() or not is_run_dir(run_dir):  # never write into a user's directory
        raise CheckpointError(f"{run_dir} is not a run directory (no spec.yaml, or no "
                              f"{RUN_MARKER}, checkpoints/last.npz or metrics.jsonl); give the "
                              "directory `netspec train` wrote")
    return load(path)


def machine(run_dir: Path) -> dict:
    """The machine that trained the run (its machine.json, written by `netspec train`); for a
    run that recorded none, this machine's, marked {"recorded": False}. Nothing is written:
    the report runs where it is asked to, which need not be where the run trained."""
    from netspec.train.run import machine_info

    try:
        info = json.loads((Path(run_dir) / "machine.json").read_text())
    except (OSError, ValueError):
        info = None
    if isinstance(info, dict):
        return info
    return {**machine_info(), "recorded": False}


# ------------------------------------------------------------------ writing


def write_report(run_dir, splits: dict | None = None) -> Path:
    """Write RUN_DIR/report.html; `splits` (from netspec.data.prepare) enables the eval pass."""
    run_dir = Path(run_dir)
    spec = run_spec(run_dir)
    history = read_history(run_dir)
    ckpt_path = next((p for p in (run_dir / "checkpoints" / "best.npz",
                                  run_dir / "checkpoints" / "last.npz") if p.exists()), None)
    body = [_summary(spec, history, machine(run_dir))]
    body.append(_section("Training curves", _curves(history), "curves"))
    if splits is None or "test" not in splits:
        body.append(_section("Test set", "<p class=note>No test data was given, so there is no "
                             "confusion matrix or image grid; run <code>netspec report RUN_DIR "
                             "--data-dir DIR</code>.</p>", "eval"))
    elif ckpt_path is None:
        body.append(_section("Test set", "<p class=note>No checkpoint yet.</p>", "eval"))
    else:
        try:
            ckpt = checkpoint.load(ckpt_path)
        except CheckpointError as e:  # damaged: report the rest, and say why this is missing
            body.append(_section("Test set", f"<p class=note>{escape(str(e))}</p>", "eval"))
        else:
            x, y = splits["test"]
            samples = evaluate_samples(spec, ckpt.state, x, y, str(ckpt_path))
            epoch = ckpt.meta.get("progress", {}).get("epoch", "?")
            where = f"checkpoint <code>{escape(ckpt_path.name)}</code> (after epoch {epoch})"
            names = getattr(getattr(splits, "dataset", None), "class_names", None)
            body += _eval_sections(spec, samples, x, where, names)
    body.append(_network(spec, (run_dir / "spec.yaml").read_text()))
    title = f"{spec.name}: run report"
    return _write_atomic(run_dir / "report.html", _page(title, body))


def write_eval_report(out_dir, spec, state: dict, source: str, split: str, x, y,
                      names=None) -> Path:
    """Write OUT_DIR/eval-report.html for one checkpoint on one split (`names`: the class
    names, when the spec's data.classes does not give them)."""
    samples = evaluate_samples(spec, state, x, y, source)
    where = f"<code>{escape(source)}</code> on the {escape(split)} split"
    head = (f"<section id=summary><h1>{escape(spec.name)}: evaluation</h1><p>{where}: "
            f"{len(y):,} images, loss {samples.losses.mean():.4f}, accuracy "
            f"<b>{100 * samples.accuracy:.2f}%</b></p></section>")
    body = [head, *_eval_sections(spec, samples, x, where, names)]
    return _write_atomic(Path(out_dir) / "eval-report.html",
                         _page(f"{spec.name}: evaluation", body))


def _write_atomic(path: Path, text: str, check: bool = True) -> Path:
    """Replace `path` atomically; with `check`, only a file netspec wrote."""
    return write_file(path, text, GENERATOR if check else None)


# ------------------------------------------------------------------ sections


def _section(title: str, html: str, ident: str) -> str:
    return f"<section id={ident}><h2>{escape(title)}</h2>{html}</section>"


def _figure(svg: str, caption: str = "") -> str:
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure class=figure>{svg}{cap}</figure>"


def _summary(spec, history: list[dict], mach: dict) -> str:
    from netspec.train.run import score

    planned = spec.train.epochs
    done = len(history)
    status = escape("finished" if done >= planned else
                    f"unfinished: {done} of {planned} epochs (still running, or interrupted; "
                    "an interrupted run continues with ")
    if done < planned:
        status += "<code>netspec train --resume RUN_DIR</code>)"
    rows = [("spec", f"<code>{escape(spec.name)}</code>"), ("status", status),
            ("epochs", f"{done} of {planned}")]
    scored = [h for h in history if score(h) >= 0]
    if scored:
        best = max(scored, key=score)
        split = "val" if "val_acc" in best else "test"
        rows.append(("best accuracy", (f"<b>{100 * best[f'{split}_acc']:.2f}%</b> {split} "
                                       f"(epoch {best['epoch']})")))
    if history:
        last = history[-1]
        final = [f"{100 * last[f'{s}_acc']:.2f}% {s}" for s in ("test", "train")
                 if f"{s}_acc" in last]
        if final:
            rows.append(("final accuracy", f"{', '.join(final)} (epoch {last['epoch']})"))
        train_s = sum(h.get("train_seconds", 0) for h in history)
        eval_s = sum(h.get("eval_seconds", 0) for h in history)
        rates = [h["images_per_second"] for h in history if "images_per_second" in h]
        ips = f" ({float(np.median(rates)):,.0f} images/s, median epoch)" if rates else ""
        workers = sorted({h.get("workers", 1) for h in history})
        rows += [("time", f"{train_s:.1f} s training + {eval_s:.1f} s evaluation{ips}"),
                 ("workers", ", ".join(f"{w:g}" for w in workers))]
    infos = spec.infos
    rows += [("network", (f"{len(infos)} layers, {sum(i.params for i in infos):,} parameters, "
                         f"{draw.count_text(sum(i.macs for i in infos))} MACs per sample")),
             ("data", escape(str(spec.data.dataset))),
             ("machine", escape(f"{mach.get('cpu')}, {mach.get('cores')} cores; "
                                f"{mach.get('system')}; Python {mach.get('python')}, NumPy "
                                f"{mach.get('numpy')}, netspec {mach.get('netspec')}"
                                + ("" if mach.get("recorded", True) else
                                   " (this machine: the run recorded none)")))]
    cells = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (f"<section id=summary><h1>{escape(spec.name)}</h1>"
            f"<table class=facts>{cells}</table></section>")


def _curves(history: list[dict]) -> str:
    def series(key):
        return {s: [(h["epoch"], h[f"{s}_{key}"]) for h in history if f"{s}_{key}" in h]
                for s in ("train", "val", "test") if any(f"{s}_{key}" in h for h in history)}

    figs = [charts.line_chart(series("loss"), "loss", "epoch"),
            charts.line_chart(series("acc"), "accuracy", "epoch", percent=True),
            charts.line_chart({"lr": [(h["epoch"], h["lr"]) for h in history if "lr" in h]},
                              "learning rate", "epoch", steps=True)]
    return "<div class=row>" + "".join(_figure(to_svg(f)) for f in figs) + "</div>"


def _eval_sections(spec, samples: Samples, x: np.ndarray, where: str,
                   names=None) -> list[str]:
    names = list(spec.data.classes or names or CLASS_NAMES.get(str(spec.data.dataset), []))
    names = names if len(names) == samples.classes else [str(i) for i in range(samples.classes)]
    matrix = samples.matrix
    errors = int(matrix.sum() - np.trace(matrix))
    conf = _section("Confusion matrix", (
        f"<p>{where}: {len(samples.labels):,} images, accuracy "
        f"<b>{100 * samples.accuracy:.2f}%</b>, {errors:,} errors. Rows are true classes, "
        "columns predictions; the last column is each class's accuracy.</p>"
        + "<div class=row>" + _figure(to_svg(charts.confusion(matrix, names)))
        + _confusions(matrix, names) + "</div>"), "confusion")
    order = np.argsort(-samples.losses, kind="stable")[:WORST]
    tiles = []
    for i in order:
        img = _to_uint8(x[i])
        if img is None:
            break
        t, p = int(samples.labels[i]), int(samples.predictions[i])
        tiles.append(
            f"<figure class=sample data-index={i} data-true={t} data-pred={p}>"
            f"<img alt='test image {i}' width=84 height=84 src='data:image/png;base64,"
            f"{base64.b64encode(png_gray(img)).decode()}'>"
            f"<figcaption><span class=truth>true {escape(names[t])}</span> "
            f"<span class={'ok' if t == p else 'bad'}>pred {escape(names[p])}</span><br>"
            f"<small>loss {samples.losses[i]:.2f} · p {samples.confidence[i]:.2f}</small>"
            f"</figcaption></figure>")
    grid = (f"<p>The {len(tiles)} test images with the highest loss ({where}).</p>"
            f"<div class=grid>{''.join(tiles)}</div>") if tiles else \
        "<p class=note>The inputs are not images.</p>"
    return [conf, _section("Worst test images", grid, "worst")]


def _confusions(matrix: np.ndarray, names: list[str], top: int = 8) -> str:
    """The most frequent mistakes as a small table: true -> predicted, count."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    pairs = sorted(((int(off[i, j]), i, j) for i, j in zip(*np.nonzero(off))), reverse=True)
    if not pairs:
        return "<p class=note>No mistakes.</p>"
    rows = "".join(f"<tr><td>{escape(names[i])}</td><td>→</td><td>{escape(names[j])}</td>"
                   f"<td class=num>{n}</td></tr>" for n, i, j in pairs[:top])
    return (f"<table class=mistakes><caption>most frequent mistakes</caption><tr><th>true</th>"
            f"<th></th><th>predicted</th><th class=num>images</th></tr>{rows}</table>")


def _network(spec, spec_text: str) -> str:
    diagram = to_svg(draw.draw(spec))
    return _section("Network and resolved spec", (
        f"<div class=row><div class=figure-wrap>{_figure(diagram)}</div>"
        f"<pre class=spec>{escape(spec_text)}</pre></div>"), "network")


# ------------------------------------------------------------------ images and page


def _to_uint8(sample: np.ndarray) -> np.ndarray | None:
    """A normalised (1, H, W), (3, H, W) or (H, W) sample -> uint8 (H, W) or (H, W, 3),
    stretched to 0..255."""
    img = np.asarray(sample, np.float64)
    img = img[0] if img.ndim == 3 and img.shape[0] == 1 else img
    if img.ndim == 3 and img.shape[0] == 3:
        img = img.transpose(1, 2, 0)
    elif img.ndim != 2:
        return None
    lo, hi = img.min(), img.max()
    return np.round((img - lo) / ((hi - lo) or 1) * 255).astype(np.uint8)


def png_gray(img: np.ndarray) -> bytes:
    """uint8 (H, W) -> an 8-bit greyscale PNG file, (H, W, 3) -> an RGB one; written by hand
    (zlib + CRCs)."""
    h, w = img.shape[:2]
    color = 2 if img.ndim == 3 else 0  # PNG colour type: 0 gray, 2 RGB
    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(img, np.uint8))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


CSS = """
body{margin:0;background:#f3f4f6;color:#1f2933;font:14px/1.45 "DejaVu Sans",system-ui,
 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:20px 24px 40px}
section{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:14px 20px;
 margin:14px 0}
h1{font-size:22px;margin:4px 0 10px}h2{font-size:16px;margin:2px 0 10px}
.facts th{text-align:left;font-weight:600;color:#5c6670;padding:3px 18px 3px 0;
 vertical-align:top;white-space:nowrap}
.facts td{padding:3px 0}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
figure{margin:0}figure.figure svg{display:block;max-width:100%;height:auto}
.figure-wrap{overflow-x:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(112px,1fr));gap:12px}
.sample{text-align:center;font-size:12px}
.sample img{width:84px;height:84px;image-rendering:pixelated;border-radius:4px;display:block;
 margin:0 auto 4px}
.ok{color:#2a8c7a}.bad{color:#c2410c;font-weight:600}.truth{color:#1f2933}
small{color:#5c6670}.note{color:#5c6670}
pre.spec{flex:1;min-width:280px;margin:0;background:#f7f8fa;border:1px solid #e3e6ea;
 border-radius:6px;padding:10px 12px;font:12px/1.4 "DejaVu Sans Mono",Menlo,monospace;
 overflow:auto}
.mistakes{border-collapse:collapse;margin-top:40px;font-size:13px}
.mistakes caption{text-align:left;font-weight:600;color:#5c6670;padding-bottom:6px}
.mistakes td,.mistakes th{padding:3px 10px;border-bottom:1px solid #eef0f2;text-align:left}
.mistakes .num{text-align:right;font-family:"DejaVu Sans Mono",Menlo,monospace}
footer{color:#5c6670;font-size:12px;text-align:center}
"""


def _page(title: str, body: list[str]) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (f"<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
            f"<meta name=generator content='{GENERATOR}'>\n"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body)
            + f"\n<footer>written by {GENERATOR} at {escape(stamp)}</footer>\n</main>\n"
              "</body>\n</html>\n")
