"""`netspec export`: a network (and checkpoint) to ONNX, optionally verified."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from netspec.cli.app import app
from netspec.cli.common import (
    SetOption,
    checkpoint_spec,
    err,
    escape,
    load_data,
    out,
    output_file,
    report_errors,
)


@app.command(name="export")
def export_onnx(
    spec_path: Path | None = typer.Argument(
        None, exists=True, dir_okay=False, metavar="SPEC",
        help="Spec file (default: the spec stored in the checkpoint)."),
    output_text: str = typer.Option(..., "--out", "-o", metavar="FILE", help="The .onnx file to "
                                "write; an existing file is replaced only if netspec wrote it."),
    checkpoint_path: Path | None = typer.Option(
        None, "--checkpoint", "-c", exists=True, dir_okay=False,
        help="A checkpoints/*.npz file (default: the spec's initial weights)."),
    check: bool = typer.Option(False, "--check", help="Before writing, verify the model: ONNX "
                               "checker, shapes at every layer, onnxruntime against netspec on "
                               "the test set."),
    overrides: list[str] = SetOption,
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="NETSPEC_DATA"),
    force: bool = typer.Option(False, "--force", help="Export even though SPEC (or --set) "
                               "differs from the checkpoint's spec in what the network computes."),
):
    """Export a network to ONNX (opset 17), optionally verified by onnxruntime."""
    from netspec import checkpoint
    from netspec.interop.onnx_export import check_output, import_onnx, save, to_onnx
    from netspec.plan.compiler import compile
    from netspec.spec.model import load

    if spec_path is None and checkpoint_path is None:
        raise typer.BadParameter("give a SPEC file, or a --checkpoint", param_hint="SPEC")
    output = output_file(output_text, "--out")
    with report_errors():
        import_onnx()  # before any work: a missing extra is exit 1 with the pip command
        check_output(output)  # and so is an -o that would overwrite a file not netspec's
        ckpt = checkpoint.load(checkpoint_path) if checkpoint_path else None
        if ckpt is None:
            spec = load(spec_path, overrides)
        else:
            spec = checkpoint_spec(spec_path, ckpt, checkpoint_path, overrides, force, "export")
        plan = compile(spec, "float32")
        if ckpt is not None:
            plan.load_state_dict(ckpt.state, str(checkpoint_path))
        norm = ckpt.meta.get("normalize") if ckpt is not None else None  # train records it
        if not norm or norm.get("normalize") != spec.data.normalize:  # (--set may change it)
            norm = None
        splits = _data_for_export(spec, data_dir, check, ckpt, norm)
        if norm is None and splits is not None:
            norm = splits.record()
        elif norm is None and spec.data.normalize == "standardize":  # initial weights, no data
            norm = {"normalize": "standardize", "initial": True}
        data = ckpt.meta.get("data") if ckpt is not None else None
        if data is None and splits is not None:
            from netspec.train.inputs import data_record

            data = data_record(splits)
        model = to_onnx(spec, plan, norm, source=str(checkpoint_path or ""), data=data)
        if check:
            from netspec.interop.onnx_check import verify

            x, y = splits["test"]
            report = verify(model, spec, plan, x, y)
            out.print(_export_check_table(report, spec))
            if not report.passed:
                err.print(f"[red]FAILED[/red]: the model does not match netspec; "
                          f"{escape(str(output))} not written")
                raise typer.Exit(1)
        save(model, output)
    size = output.stat().st_size
    meta = {p.key: p.value for p in model.metadata_props}
    norm = meta["netspec.normalize"]
    if "netspec.mean" in meta:
        norm += f", mean {meta['netspec.mean']}, std {meta['netspec.std']}"
    elif norm == "standardize":
        norm += (", mean and std not recorded (initial weights, and no data on disk: a "
                 "checkpoint, or --data-dir, records them)")
    out.print(f"[green]wrote[/green] {escape(str(output))} ({size / 1024:,.1f} kB; opset "
              f"{model.opset_import[0].version}, IR version {model.ir_version}; "
              f"{len(model.graph.node)} nodes; input normalisation in the metadata: {norm})")


def _data_for_export(spec, data_dir, check: bool, ckpt, norm):
    """The data an export needs, or None: the test set for --check, and the training mean and
    std when the checkpoint did not record them. Initial weights were trained on nothing, so
    for them the mean and std of the data are recorded only when the data is on disk already
    (never downloaded for this); without it the model records no mean and std, and says so."""
    from netspec.errors import DataError
    from netspec.train.inputs import stored_norm

    standardize = spec.data.normalize == "standardize"
    if check or (norm is None and standardize and ckpt is not None):
        # the real test set, normalised with the checkpoint's statistics (else the data's)
        return load_data(spec, data_dir, stored_norm(ckpt.meta, spec) if ckpt else None)
    if norm is None and standardize:
        try:
            return load_data(spec, data_dir, download=False)
        except DataError:
            return None
    return None


def _export_check_table(report, spec) -> Table:
    table = Table(title=f"{escape(spec.name)}: ONNX model against netspec", title_justify="left")
    for col in ("check", "layer / batch", "netspec", "ONNX", ""):
        table.add_column(col)
    for r in report.rows:
        table.add_row(r.check, escape(r.subject), escape(r.expected), escape(r.found),
                      "[green]ok[/green]" if r.passed else "[red]FAIL[/red]")
    return table
