"""`netspec predict`: class names and probabilities for image files (or table rows), from a
checkpoint, preprocessed as the network's training data was."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer
from rich.table import Table

from netspec.cli.app import app
from netspec.cli.common import escape, out, report_errors

FORMATS = ("table", "csv", "json")


@app.command()
def predict(
    inputs: list[Path] = typer.Argument(
        ..., metavar="IMAGES_OR_DIRS...",
        help="Image files, or directories of them (their image files, by extension); for a "
             "network trained on a table, .csv files with its feature columns."),
    checkpoint_path: Path = typer.Option(
        ..., "--checkpoint", "-c", exists=True,
        help="A checkpoints/*.npz file, or a run directory (its best checkpoint)."),
    top_k: int = typer.Option(1, "--top-k", "-k", min=1, help="Also list the K most probable "
                                                             "classes of each input."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json (one array)."),
    resize: str | None = typer.Option(
        None, "--resize", metavar="INTERPOLATION",
        help="Resize images of another size (nearest, bilinear, bicubic, lanczos, box, "
             "hamming); by default they must have the training images' size, unless training "
             "resized them itself."),
):
    """Predict the class of each image (or table row) with a trained checkpoint."""
    from netspec.train.predict import Predictor

    if fmt not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}, got {fmt!r}",
                                 param_hint="--format")
    with report_errors():
        predictor = Predictor.from_checkpoint(_checkpoint_file(checkpoint_path), resize)
        predictions = predictor.predict([str(p) for p in inputs], top_k=top_k)
    if fmt == "json":
        typer.echo(json.dumps([p.as_dict() for p in predictions], indent=1))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file", "class", "index", "probability"]
                        + (["top_k"] if top_k > 1 else []))
        for p in predictions:
            writer.writerow([p.file, p.name, p.index, f"{p.probability:.6f}"]
                            + ([";".join(f"{n}:{q:.6f}" for n, _, q in p.top_k)]
                               if top_k > 1 else []))
        typer.echo(buffer.getvalue(), nl=False)
    else:
        out.print(_table(predictions, top_k, checkpoint_path))


def _checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("best.npz", "last.npz"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
    return path


def _table(predictions, top_k: int, source: Path) -> Table:
    table = Table(title=escape(f"{source}: {len(predictions)} predictions"),
                  title_justify="left")
    for col, justify in (("file", "left"), ("class", "left"), ("probability", "right")):
        table.add_column(col, justify=justify, overflow="fold")
    if top_k > 1:
        table.add_column(f"top {top_k}", overflow="fold")
    for p in predictions:
        row = [escape(p.file or ""), escape(f"{p.name} ({p.index})"), f"{p.probability:.4f}"]
        if top_k > 1:
            row.append(escape(", ".join(f"{n} {q:.3f}" for n, _, q in p.top_k)))
        table.add_row(*row)
    return table
