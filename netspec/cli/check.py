"""Verbs that look at a spec without training it: validate, draw, schema, gradcheck."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.table import Table

from netspec.cli.app import app
from netspec.cli.common import (
    SetEachOption,
    SetOption,
    SpecArg,
    err,
    escape,
    fmt_count,
    fmt_shape,
    fmt_si,
    out,
    output_file,
    report_errors,
)
from netspec.errors import NetspecError

# ------------------------------------------------------------------ validate


@app.command()
def validate(specs: list[Path] = SpecArg,
             quiet: bool = typer.Option(False, "--quiet", "-q", help="Only report errors."),
             overrides: list[str] = SetEachOption):
    """Check spec files and print each network's shapes, parameters and cost."""
    from netspec.spec.model import load
    from netspec.train.inputs import describe_data

    failed = 0
    for path in specs:
        try:
            spec = load(path, overrides)
        except NetspecError as e:
            failed += 1
            for problem in e.problems:
                err.print(f"[red]error:[/red] {escape(str(problem))}")
            continue
        try:
            about, missing = describe_data(spec)
        except NetspecError as e:
            failed += 1
            for problem in e.problems:
                err.print(f"[red]error:[/red] {escape(str(problem))}")
            continue
        for problem in missing:  # the network is fine; its data is not there (yet)
            err.print(f"[yellow]warning:[/yellow] {escape(str(problem))}")
        if not quiet:
            out.print(_shape_table(spec))
            for line in about:
                out.print(escape(f"data: {line}"))
        infos = spec.infos
        params = sum(i.params for i in infos)
        macs = sum(i.macs for i in infos)
        acts = sum(math.prod(i.out_shape) for i in infos) + math.prod(spec.input.shape)
        out.print(f"[green]ok[/green] {escape(str(path))}: {len(infos)} layers, "
                  f"{fmt_count(params)} parameters, {fmt_si(macs)}MAC and {fmt_si(acts * 4)}B of "
                  "float32 activations per sample")
    if failed:
        raise typer.Exit(1)


def _shape_table(spec) -> Table:
    """One row per layer; a graph gets an `inputs` column, filled where a layer reads anything
    other than the layer above it."""
    infos = spec.infos
    above = [("input",)] + [(i.name,) for i in infos[:-1]]
    wired = ["\n".join(i.inputs) if i.inputs != up else "" for i, up in zip(infos, above)]
    table = Table(title=f"{escape(spec.name)}  input {fmt_shape(spec.input.shape)}",
                  title_justify="left")
    columns = [("#", "right"), ("name", "left"), ("type", "left")]
    columns += [("inputs", "left")] if any(wired) else []
    columns += [("output shape", "left"), ("params", "right"), ("MACs", "right")]
    for col, justify in columns:  # names fold when narrow; shapes and numbers never do
        wrap = col in ("name", "type", "inputs")
        table.add_column(col, justify=justify, no_wrap=not wrap, overflow="fold",
                         min_width=14 if col in ("name", "inputs") else None)
    for i, inputs in zip(infos, wired):
        table.add_row(str(i.index), escape(i.name), i.type,
                      *([escape(inputs)] if any(wired) else []),
                      fmt_shape(i.out_shape), fmt_count(i.params) if i.params else "",
                      fmt_count(i.macs) if i.macs else "")
    table.add_section()
    table.add_row("", "total", "", *([""] if any(wired) else []), "",
                  fmt_count(sum(i.params for i in infos)), fmt_count(sum(i.macs for i in infos)))
    return table


# ------------------------------------------------------------------ draw


@app.command()
def draw(
    spec_path: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="SPEC"),
    output_text: str = typer.Option(..., "--out", "-o", metavar="FILE",
                                     help="Output file (.svg or .png)."),
    fmt: str | None = typer.Option(None, "--format",
                                   help="svg or png (default: from the file name, else svg)."),
    collapse: bool = typer.Option(False, help="Draw repeated blocks (layer1.0, layer1.1, ...) "
                                              "as one box, 'layer1 ×2', and so uses of a block "
                                              "that follow one another ('a–b ×2')."),
    overrides: list[str] = SetOption,
):
    """Draw the network as a diagram, from shape inference alone (no graphviz)."""
    from netspec.spec.model import load
    from netspec.viz import draw as drawing

    output = output_file(output_text, "--out")
    suffix = output.suffix.lower().lstrip(".")
    if fmt is None and suffix not in ("svg", "png"):
        raise typer.BadParameter(f"{output} does not end in .svg or .png; name the file so, or "
                                 "give --format svg|png", param_hint="--out")
    fmt = (fmt or suffix).lower()
    if fmt not in ("svg", "png"):
        raise typer.BadParameter(f"choose svg or png, got {fmt!r}", param_hint="--format")
    if suffix in ("svg", "png") and suffix != fmt:
        raise typer.BadParameter(f"--format {fmt} would write {fmt.upper()} into {output}; "
                                 f"name the file .{fmt}, or leave --format out",
                                 param_hint="--format")
    with report_errors():
        spec = load(spec_path, overrides)
        scene = drawing.draw(spec, collapse=collapse)
        drawing.save(scene, output, fmt)
    out.print(f"wrote {escape(str(output))} ({scene.meta['layers']} layers, "
              f"{scene.meta['params']:,} parameters, {fmt_si(scene.meta['macs'])}MAC per sample)")


# ------------------------------------------------------------------ schema


@app.command()
def schema(output: str | None = typer.Option(None, "--out", "-o", metavar="FILE",
                                                help="Write to this file instead of stdout; "
                                                     "a file netspec did not write is kept.")):
    """Print the JSON Schema of the spec language (for yaml-language-server)."""
    from netspec.fsio import atomic_write, check_output_path, read_head
    from netspec.spec.schema import json_schema, written_by_netspec

    if output is not None:
        output = output_file(output, "-o", existing_dir=False)
    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        with report_errors():  # replace only a schema netspec wrote (judged by its content)
            check_output_path(output, ours=lambda p: written_by_netspec(read_head(p, 16 << 20)))
            atomic_write(output, text)
        out.print(f"wrote {escape(str(output))}")
    else:
        typer.echo(text, nl=False)


# ------------------------------------------------------------------ gradcheck


@app.command()
def gradcheck(specs: list[Path] = SpecArg,
              layers: bool = typer.Option(True, help="Also check each layer in isolation."),
              overrides: list[str] = SetEachOption):
    """Finite-difference check of every gradient, through each spec's own loss."""
    from netspec.plan.gradcheck import check_spec
    from netspec.spec.model import load

    failed = 0
    with report_errors():
        for path in specs:
            spec = load(path, overrides)
            report = check_spec(spec, isolated=layers)
            out.print(_gradcheck_table(report, path))
            for problem in report.problems:
                err.print(f"[red]error:[/red] {escape(str(path))}: {escape(problem)}")
            verdict = "[green]passed[/green]" if report.passed else "[red]FAILED[/red]"
            out.print(f"{verdict} {escape(str(path))}: "
                      f"{sum(r.checked for r in report.rows)} entries checked, "
                      f"{report.skipped} skipped at kinks; eps {report.eps:g}, "
                      f"pass if |a-n| <= {report.atol:g} + {report.rtol:g}*|n|")
            failed += not report.passed
    if failed:
        raise typer.Exit(1)


def _gradcheck_table(report, path) -> Table:
    table = Table(title=f"gradcheck {escape(str(path))}", title_justify="left")
    for col in ("scope", "layer", "type", "tensor", "line", "checked", "skipped",
                "worst rel err", "at index", ""):
        table.add_column(col)
    for r in report.rows:
        table.add_row(r.scope, escape(r.layer), r.type, r.tensor, str(r.line or ""), str(r.checked),
                      str(r.skipped), f"{r.rel_err:.1e}", str(r.index or ""),
                      "[green]ok[/green]" if r.passed else "[red]FAIL[/red]")
    return table
