"""Training curves (loss and accuracy per epoch) drawn headless with matplotlib's Agg canvas."""

from __future__ import annotations

import io
from pathlib import Path

from netspec.fsio import atomic_write


def plot_run(run) -> Path | None:
    """Write a run's curves.png from its history (None when there is nothing to plot yet)."""
    if not run.history:
        return None
    return plot_curves(run.history, run.out / "curves.png", title=run.spec.name)


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Write a two-panel PNG (loss, accuracy vs epoch) from metrics.jsonl records."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)  # no pyplot, no global backend: safe in any process
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    for split, style in (("train", "-o"), ("val", "-^"), ("test", "-s")):
        if f"{split}_loss" in history[0]:
            loss_ax.plot(epochs, [h[f"{split}_loss"] for h in history], style, ms=3, label=split)
            acc_ax.plot(epochs, [100 * h[f"{split}_acc"] for h in history], style, ms=3,
                        label=split)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss", yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    return atomic_write(Path(path), png.getvalue())  # OutputError naming the file if it fails
