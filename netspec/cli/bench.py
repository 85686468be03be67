"""`netspec bench`: per-layer timing of a training step, as a table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from netspec.cli.app import app
from netspec.cli.common import (
    BLAS_HELP,
    CONV_HELP,
    EVAL_CONV_HELP,
    FUSE_HELP,
    SetOption,
    describe_plan,
    escape,
    fmt_shape,
    out,
    plan_options,
    report_errors,
)


@app.command()
def bench(
    spec_path: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="SPEC"),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", min=1,
                                          help="Default: the spec's train.batch_size."),
    repeats: int = typer.Option(20, min=1, help="Timed steps; the table shows medians."),
    dtype: str = typer.Option("float32", help="float32 or float64."),
    overrides: list[str] = SetOption,
    workers: str = typer.Option(
        "1", metavar="N|auto",
        help="Time what one of `netspec train --workers N|auto`'s processes runs: its share "
             "of each batch, with its share of the BLAS threads (and so the conv algorithms "
             "it takes). 1: the whole batch in this process."),
    blas_threads: int | None = typer.Option(None, "--blas-threads", min=1, help=BLAS_HELP),
    conv: str = typer.Option("auto", help=CONV_HELP),
    eval_conv: str = typer.Option("im2col", "--eval-conv", help=EVAL_CONV_HELP),
    fuse: bool = typer.Option(True, help=FUSE_HELP),
):
    """Per-layer forward/backward timing of a training step (like `caffe time`)."""
    from contextlib import nullcontext

    import numpy as np

    from netspec.kernels import blas
    from netspec.plan.bench import time_layers
    from netspec.plan.compiler import compile
    from netspec.plan.options import resolve_workers
    from netspec.spec.model import load

    if dtype not in ("float32", "float64"):
        raise typer.BadParameter("choose float32 or float64", param_hint="--dtype")
    with report_errors():
        spec = load(spec_path, overrides)
        options = plan_options(spec, workers, blas_threads, conv, fuse, eval_conv)
        plan = compile(spec, dtype, options)
        n, threads = options.workers, options.blas_threads
        batch = batch_size or spec.train.batch_size
        share = -(-batch // n)  # the largest worker's slice, which sets the step's pace
        with blas.limit(threads) if options.limit_blas else nullcontext():  # as a worker runs
            report = time_layers(plan, share, repeats, np.random.default_rng(spec.seed),
                                 loss=spec.loss, optimizer=spec.train.optimizer)
    for line in describe_plan(plan):
        out.print(escape(line))
    what = f"batch {batch}" if n == 1 else f"one worker's share ({share}) of a batch of {batch}"
    table = Table(title=f"{escape(spec.name)}: {what}, {dtype}, median of {repeats} steps (ms)",
                  title_justify="left")
    algorithms = plan.algorithms()
    for col in ("#", "name", "type", "output shape", "forward", "backward", "share"):
        table.add_column(col, justify="left" if col in ("name", "type", "output shape")
                         else "right")
    for i, t in enumerate(report.layers):
        kind = f"{t.type} ({algorithms[t.name]})" if t.name in algorithms else t.type
        table.add_row(str(i), escape(t.name), kind, fmt_shape(t.out_shape),
                      f"{t.forward_ms:.3f}", f"{t.backward_ms:.3f}", f"{100 * t.share:.1f}%")
    table.add_section()
    table.add_row("", "loss", "", "", f"{report.loss_ms:.3f}", "", "")
    table.add_row("", "optimizer step", "", "", f"{report.optimizer_ms:.3f}", "", "")
    table.add_row("", "layers total", "", "", f"{report.forward_ms:.3f}",
                  f"{report.backward_ms:.3f}", "")
    out.print(table)
    rate = report.images_per_s * n  # the workers run their shares at the same time
    out.print(f"step {report.step_ms:.2f} ms (min {report.step_min_ms:.2f}, max "
              f"{report.step_max_ms:.2f}): {rate:,.0f} images/s; "
              f"an epoch of 60,000 images ~ {60000 / rate:.1f} s")
    if n > 1:
        out.print(f"the {n} workers run their shares at once; not counted: passing the batch, "
                  "summing gradients and batchnorm's exchanges between them")
    auto, auto_why = resolve_workers("auto", spec.infos, spec.train.batch_size)
    if n == 1 and auto > 1:
        out.print(f"timed in one process; `netspec train` splits each batch across {auto_why} "
                  "(--workers auto times one worker's share)")
