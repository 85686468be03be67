"""A sweep's results: one row per trial, the summary files, the grouped table and sweep.png.

A row holds: trial (the run directory's name), status, overrides ({key path: value}), seed,
final and best (the metric at the last epoch and at the best one), epochs, seconds (training
plus evaluation time over all epochs, across resumes), run_dir, worker (its address) and pid,
message (why it failed) and note (how it ran: resumed, restarted after a lost worker, ...).
`write_summary` writes summary.csv, summary.json and sweep.png atomically into the sweep's
directory; `groups` gives mean and std over seeds for each point of the grid.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path


def new_row(trial, run_dir: Path) -> dict:
    return {"trial": trial.key, "status": "queued",
            "overrides": {path: _value(text) for path, text in trial.values},
            "seed": trial.seed, "final": None, "best": None, "epochs": 0, "seconds": 0.0,
            "run_dir": str(run_dir), "worker": "", "pid": None, "message": "", "note": ""}


def _value(text: str):
    from netspec.sweep.grid import canonical

    return canonical(text)


def scores(history: list[dict], metric: str, higher: bool) -> dict:
    """final, best, epochs and seconds of a run's metrics.jsonl records."""
    values = [h[metric] for h in history if _finite(h.get(metric))]
    best = (max if higher else min)(values) if values else None
    final = history[-1].get(metric) if history else None
    seconds = sum(h.get("train_seconds", 0.0) + h.get("eval_seconds", 0.0) for h in history)
    return {"final": final if _finite(final) else None, "best": best,
            "epochs": len(history), "seconds": seconds}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def groups(rows: list[dict], higher: bool) -> list[dict]:
    """Rows with the same overrides, pooled over seeds: count, mean and sample std of the final
    and best metric, best group first (groups without a finished trial last)."""
    pooled: dict[str, list[dict]] = {}
    for row in rows:
        pooled.setdefault(json.dumps(row["overrides"], sort_keys=True), []).append(row)
    out = []
    for members in pooled.values():
        done = [r for r in members if r["status"] == "done" and r["final"] is not None]
        group = {"overrides": members[0]["overrides"], "trials": len(members),
                 "done": len(done), "failed": sum(r["status"] == "failed" for r in members),
                 "seeds": [r["seed"] for r in done],
                 "seconds": statistics.fmean(r["seconds"] for r in done) if done else None}
        for which in ("final", "best"):
            values = [r[which] for r in done]
            group[f"{which}_mean"] = statistics.fmean(values) if values else None
            group[f"{which}_std"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(group)
    sign = -1 if higher else 1
    return sorted(out, key=lambda g: (g["final_mean"] is None, sign * (g["final_mean"] or 0)))


# ------------------------------------------------------------------ files


def write_summary(result) -> list[Path]:
    """summary.csv, summary.json and (once a trial has finished) sweep.png in result.out."""
    from netspec.fsio import atomic_write

    out, metric = result.out, result.metric
    paths = list(result.grid)
    fields = ["trial", *paths, "seed", "status", f"final_{metric}", f"best_{metric}",
              "epochs", "seconds", "run_dir", "worker", "message", "note"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(fields)
    for r in result.rows:
        writer.writerow([r["trial"], *[_csv(r["overrides"][p]) for p in paths], r["seed"],
                         r["status"], _csv(r["final"]), _csv(r["best"]), r["epochs"],
                         f"{r['seconds']:.2f}", r["run_dir"], r["worker"], r["message"],
                         r["note"]])
    files = [atomic_write(out / "summary.csv", text.getvalue())]
    summary = {"metric": metric, "higher_is_better": result.higher_is_better,
               "grid": result.grid, "seeds": result.seeds, "interrupted": result.interrupted,
               "trials": result.rows, "groups": groups(result.rows, result.higher_is_better)}
    files.append(atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n"))
    if any(r["status"] == "done" and r["final"] is not None for r in result.rows):
        files.append(plot(result, out / "sweep.png"))
    return files


def _csv(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


# ------------------------------------------------------------------ plot


def plot(result, path: Path) -> Path:
    """The final metric of the finished trials against each swept value (one panel per key
    path; against the seed when nothing is swept), one point per seed, means joined by a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    swept = list(result.grid) or ["seed"]
    rows = [r for r in result.rows if r["status"] == "done" and r["final"] is not None]
    scale = 100 if result.metric.endswith("_acc") else 1
    fig = Figure(figsize=(4.5 * len(swept), 3.6), dpi=100)
    FigureCanvasAgg(fig)  # no pyplot, no global backend: safe in any process
    axes = fig.subplots(1, len(swept), squeeze=False)[0]
    for ax, key in zip(axes, swept):
        values = result.grid.get(key, result.seeds)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        where = {json.dumps(v): (v if numeric else i) for i, v in enumerate(values)}
        xs = [where[json.dumps(_key_value(r, key))] for r in rows]
        ys = [scale * r["final"] for r in rows]
        ax.plot(xs, ys, "o", alpha=0.6, label="one trial (seed)")
        means = []
        for x in where.values():
            ys_here = [y for xx, y in zip(xs, ys) if xx == x]
            if ys_here:
                means.append((x, sum(ys_here) / len(ys_here)))
        ax.plot(*zip(*sorted(means)), "-", color="black", lw=1, label="mean")
        if numeric and min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(list(where.values()), list(where), rotation=30)
        ax.set(xlabel=key, ylabel=f"final {result.metric}" + (" (%)" if scale == 100 else ""))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    from netspec.fsio import atomic_write

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write(path, buffer.getvalue())


def _key_value(row: dict, key: str):
    return row["seed"] if key == "seed" and key not in row["overrides"] else row["overrides"][key]
