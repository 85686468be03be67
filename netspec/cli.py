"""The `netspec` command line: thin commands over library calls. The only module that prints.

Exit codes: 0 ok, 1 the spec, data or checkpoint is wrong (or a check failed), 2 usage error,
130 interrupted. Errors caused by input are printed as `FILE:LINE:COL: key.path: message`,
never as a traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from netspec.errors import NetspecError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
    help="Declare a neural network in YAML; validate, gradient-check, train and time it.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

SpecArg = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                         help="Spec file(s) (YAML).")


@contextlib.contextmanager
def report_errors():
    """Turn NetspecError into printed problems and exit code 1, Ctrl-C into 130."""
    try:
        yield
    except NetspecError as e:
        for problem in e.problems:
            err.print(f"[red]error:[/red] {_escape(str(problem))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


def _shape(shape) -> str:
    return str(tuple(shape))


def _count(n: int) -> str:
    return f"{n:,}"


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


# ------------------------------------------------------------------ validate


@app.command()
def validate(specs: List[Path] = SpecArg,
             quiet: bool = typer.Option(False, "--quiet", "-q", help="Only report errors.")):
    """Check spec files and print each network's shapes, parameters and cost."""
    from netspec.spec import load

    failed = 0
    for path in specs:
        try:
            spec = load(path)
        except NetspecError as e:
            failed += 1
            for problem in e.problems:
                err.print(f"[red]error:[/red] {_escape(str(problem))}")
            continue
        if not quiet:
            out.print(_shape_table(spec))
        infos = spec.infos
        params = sum(i.params for i in infos)
        macs = sum(i.macs for i in infos)
        acts = sum(math.prod(i.out_shape) for i in infos) + math.prod(spec.input.shape)
        out.print(f"[green]ok[/green] {path}: {len(infos)} layers, {_count(params)} parameters, "
                  f"{_si(macs)}MAC and {_si(acts * 4)}B of float32 activations per sample")
    if failed:
        raise typer.Exit(1)


def _shape_table(spec) -> Table:
    table = Table(title=f"{spec.name}  input {_shape(spec.input.shape)}", title_justify="left")
    for col, justify in (("#", "right"), ("name", "left"), ("type", "left"),
                         ("output shape", "left"), ("params", "right"), ("MACs", "right")):
        table.add_column(col, justify=justify)
    for i in spec.infos:
        table.add_row(str(i.index), i.name, i.type, _shape(i.out_shape),
                      _count(i.params) if i.params else "", _count(i.macs) if i.macs else "")
    table.add_section()
    table.add_row("", "total", "", "", _count(sum(i.params for i in spec.infos)),
                  _count(sum(i.macs for i in spec.infos)))
    return table


# ------------------------------------------------------------------ schema


@app.command()
def schema(output: Optional[Path] = typer.Option(None, "--out", "-o",
                                                 help="Write to this file instead of stdout.")):
    """Print the JSON Schema of the spec language (for yaml-language-server)."""
    from netspec.spec import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
        out.print(f"wrote {output}")
    else:
        typer.echo(text, nl=False)


# ------------------------------------------------------------------ gradcheck


@app.command()
def gradcheck(specs: List[Path] = SpecArg,
              layers: bool = typer.Option(True, help="Also check each layer in isolation.")):
    """Finite-difference check of every gradient, through each spec's own loss."""
    from netspec.gradcheck import check_spec
    from netspec.spec import load

    failed = 0
    with report_errors():
        for path in specs:
            spec = load(path)
            report = check_spec(spec, isolated=layers)
            out.print(_gradcheck_table(report, path))
            verdict = "[green]passed[/green]" if report.passed else "[red]FAILED[/red]"
            out.print(f"{verdict} {path}: {sum(r.checked for r in report.rows)} entries checked, "
                      f"{report.skipped} skipped at kinks; eps {report.eps:g}, "
                      f"pass if |a-n| <= {report.atol:g} + {report.rtol:g}*|n|")
            failed += not report.passed
    if failed:
        raise typer.Exit(1)


def _gradcheck_table(report, path) -> Table:
    table = Table(title=f"gradcheck {path}", title_justify="left")
    for col in ("scope", "layer", "type", "tensor", "line", "checked", "skipped",
                "worst rel err", "at index", ""):
        table.add_column(col)
    for r in report.rows:
        table.add_row(r.scope, r.layer, r.type, r.tensor, str(r.line or ""), str(r.checked),
                      str(r.skipped), f"{r.rel_err:.1e}", str(r.index or ""),
                      "[green]ok[/green]" if r.passed else "[red]FAIL[/red]")
    return table


def main():
    app()


if __name__ == "__main__":
    main()
