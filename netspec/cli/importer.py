"""`netspec import`: an ONNX model to a spec (and its weights to a netspec checkpoint)."""

from __future__ import annotations

from pathlib import Path

import typer

from netspec.cli.app import app
from netspec.cli.common import escape, fmt_count, fmt_si, out, report_errors


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise typer.BadParameter(f"expected positive sizes such as 3,224,224; got {text!r}",
                                 param_hint="--input-shape")
    return dims


@app.command(name="import")
def import_model(
    model_path: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="MODEL",
                                      help="The .onnx model file."),
    output: Path = typer.Option(..., "--out", "-o", dir_okay=False,
                                help="The spec to write (YAML); an existing file is replaced "
                                     "only if netspec import wrote it."),
    weights: Path | None = typer.Option(
        None, "--weights", "-w", dir_okay=False,
        help="Also write the weights as a netspec checkpoint (.npz), for eval --checkpoint, "
             "export --checkpoint and train --init."),
    input_shape: str | None = typer.Option(
        None, "--input-shape", metavar="C,H,W",
        help="Shape of one sample, for a model whose input shape is symbolic."),
    name: str | None = typer.Option(None, "--name", help="The spec's name (default: the "
                                                         "model file's stem)."),
):
    """Import an ONNX model as a readable spec (and its weights); nothing is written unless
    every node imports."""
    from netspec.interop.onnx_import import check_outputs, import_model, save
    from netspec.interop.onnx_read import import_onnx

    shape = _shape(input_shape)
    with report_errors():
        import_onnx()  # a missing extra is exit 1 with the pip command, before any work
        check_outputs(output, weights)  # and so is a file netspec would not overwrite
        imported = import_model(model_path, shape, name)
        save(imported, output, weights)
    infos = imported.spec.infos
    params, macs = sum(i.params for i in infos), sum(i.macs for i in infos)
    src = imported.source
    out.print(f"[green]wrote[/green] {escape(str(output))}: {len(infos)} layers from "
              f"{src['nodes']} ONNX nodes (opset {src['opset']}), {fmt_count(params)} "
              f"parameters, {fmt_si(macs)}MAC per sample")
    if weights is not None:
        out.print(f"[green]wrote[/green] {escape(str(weights))}: the weights as a netspec "
                  "checkpoint (eval --checkpoint, export --checkpoint, train --init)")
    else:
        out.print("weights not written; add --weights FILE.npz to keep them")
