"""The `netspec` command line: thin commands over library calls. The only module that prints.

Exit codes: 0 ok, 1 the spec, data or checkpoint is wrong (or a check failed), 2 usage error,
130 interrupted (SIGINT, Ctrl-C), 143 terminated (SIGTERM, as sent by Slurm, Kubernetes, Dask).
Errors caused by input are printed as `FILE:LINE:COL: key.path: message`, never as a traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import rich.markup
import typer
from rich.console import Console, ConsoleDimensions
from rich.table import Table

from netspec.errors import NetspecError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
    help="Declare a neural network in YAML; validate, gradient-check, train and time it.",
)
class _Console(Console):
    """rich's Console, except that output to a pipe or a file is not cut at 80 columns: tables
    there take their full width (`netspec gradcheck ... | less` shows every digit)."""

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        return size if self.is_terminal else ConsoleDimensions(PIPE_WIDTH, size.height)

    @size.setter
    def size(self, value) -> None:
        Console.size.fset(self, value)


PIPE_WIDTH = 1000  # columns when not on a terminal: wider than any table netspec draws
out = _Console(highlight=False, soft_wrap=True)  # long paths stay on one line
err = _Console(stderr=True, highlight=False, soft_wrap=True)

SpecArg = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                         help="Spec file(s) (YAML).")


@contextlib.contextmanager
def report_errors():
    """Turn NetspecError into printed problems and exit code 1, Ctrl-C into 130 (SIGTERM that
    interrupts at once, see `train`, into 143)."""
    try:
        yield
    except NetspecError as e:
        for problem in e.problems:
            err.print(f"[red]error:[/red] {_escape(str(problem))}")
        raise typer.Exit(1) from None
    except Terminated:
        err.print("[yellow]terminated[/yellow]")
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None
    except MemoryError:
        err.print("[red]error:[/red] out of memory; use a smaller train.batch_size or "
                  "train.eval_batch_size, or smaller layers")
        raise typer.Exit(1) from None
    except OSError as e:  # the library names its files; this is the net for anything missed
        from netspec.fsio import os_problem

        text = str(os_problem(e, e.filename, "read or write")) if e.filename else str(e)
        err.print(f"[red]error:[/red] {_escape(text)}")
        raise typer.Exit(1) from None


class Terminated(KeyboardInterrupt):
    """A second SIGTERM: stop at once, like a second Ctrl-C."""


STOP_SIGNALS = {"SIGINT": (130, KeyboardInterrupt, "interrupted"),
                "SIGTERM": (143, Terminated, "terminated")}  # signal -> exit code, ...


def _escape(text: str) -> str:
    """Show text literally: rich's escape also handles backslashes before '[' (a bare
    replace let `x\\[/foo]` in a spec through as a markup tag and crashed the printer)."""
    return rich.markup.escape(text)


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
def validate(specs: list[Path] = SpecArg,
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
    """One row per layer; a graph gets an `inputs` column, filled where a layer reads anything
    other than the layer above it."""
    infos = spec.infos
    above = [("input",)] + [(i.name,) for i in infos[:-1]]
    wired = ["\n".join(i.inputs) if i.inputs != up else "" for i, up in zip(infos, above)]
    table = Table(title=f"{spec.name}  input {_shape(spec.input.shape)}", title_justify="left")
    columns = [("#", "right"), ("name", "left"), ("type", "left")]
    columns += [("inputs", "left")] if any(wired) else []
    columns += [("output shape", "left"), ("params", "right"), ("MACs", "right")]
    for col, justify in columns:  # names fold when narrow; shapes and numbers never do
        wrap = col in ("name", "type", "inputs")
        table.add_column(col, justify=justify, no_wrap=not wrap, overflow="fold",
                         min_width=14 if col in ("name", "inputs") else None)
    for i, inputs in zip(infos, wired):
        table.add_row(str(i.index), i.name, i.type, *([inputs] if any(wired) else []),
                      _shape(i.out_shape), _count(i.params) if i.params else "",
                      _count(i.macs) if i.macs else "")
    table.add_section()
    table.add_row("", "total", "", *([""] if any(wired) else []), "",
                  _count(sum(i.params for i in infos)), _count(sum(i.macs for i in infos)))
    return table


# ------------------------------------------------------------------ draw


@app.command()
def draw(
    spec_path: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="SPEC"),
    output: Path = typer.Option(..., "--out", "-o", dir_okay=False,
                                help="Output file (.svg or .png)."),
    fmt: str | None = typer.Option(None, "--format",
                                   help="svg or png (default: from the file name, else svg)."),
    collapse: bool = typer.Option(False, help="Draw repeated blocks (layer1.0, layer1.1, ...) "
                                              "as one box, 'layer1 ×2'."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY.PATH=VALUE"),
):
    """Draw the network as a diagram, from shape inference alone (no graphviz)."""
    from netspec import draw as drawing
    from netspec.spec import load

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
    out.print(f"wrote {output} ({scene.meta['layers']} layers, {scene.meta['params']:,} "
              f"parameters, {_si(scene.meta['macs'])}MAC per sample)")


# ------------------------------------------------------------------ schema


@app.command()
def schema(output: Path | None = typer.Option(None, "--out", "-o",
                                                 help="Write to this file instead of stdout.")):
    """Print the JSON Schema of the spec language (for yaml-language-server)."""
    from netspec.fsio import atomic_write
    from netspec.spec import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        with report_errors():
            atomic_write(output, text)
        out.print(f"wrote {output}")
    else:
        typer.echo(text, nl=False)


# ------------------------------------------------------------------ gradcheck


@app.command()
def gradcheck(specs: list[Path] = SpecArg,
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
            for problem in report.problems:
                err.print(f"[red]error:[/red] {path}: {_escape(problem)}")
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


# ------------------------------------------------------------------ train


def _load_data(spec, data_dir):
    """Find (or download) the spec's dataset and normalise it; check it fits the network."""
    from netspec.data import load_dataset, prepare
    from netspec.train import check_dataset

    with out.status(f"loading {spec.data.dataset} ..."):
        ds = load_dataset(spec.data.dataset, data_dir=data_dir, progress=_download_progress)
    check_dataset(spec, ds)
    splits = prepare(ds, spec.data.normalize, spec.data.validation)
    counts = ", ".join(f"{k} {len(v[1]):,}" for k, v in splits.items())
    out.print(f"data: {ds.name} from {ds.path} ({counts}; normalize {spec.data.normalize})")
    return splits


def _download_progress(name, done, total):
    if total and done == total:
        out.print(f"downloaded {name} ({done:,} bytes)")


@app.command()
def train(
    spec_path: Path | None = typer.Argument(
        None, exists=True, dir_okay=False, metavar="SPEC",
        help="Spec file; optional with --resume (the run's spec.yaml is used)."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY.PATH=VALUE",
                                        help="Override a spec value (repeatable), e.g. "
                                             "--set train.epochs=1"),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="NETSPEC_DATA",
                                            help="Directory holding the dataset files."),
    run_dir: Path | None = typer.Option(None, "--out", help="Run directory "
                                           "[default: runs/<name>-<timestamp>]"),
    resume: Path | None = typer.Option(None, "--resume", file_okay=False, exists=True,
                                          help="Continue the run in this directory."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    workers: str = typer.Option(
        "auto", help="Processes that share each batch: a number, or 'auto' (one per core for "
                     "convolutional nets, on Linux; else 1)."),
):
    """Train a spec; writes spec.yaml, metrics.jsonl, checkpoints and curves.png."""
    import time

    from netspec.fsio import check_new_run_dir, check_run_dir
    from netspec.spec import load
    from netspec.train import Run, score

    if spec_path is None and resume is None:
        raise typer.BadParameter("give a SPEC file, or --resume RUN_DIR", param_hint="SPEC")
    if resume and run_dir and resume != run_dir:
        raise typer.BadParameter("--out and --resume name different directories")
    requested = _workers_option(workers)
    with report_errors():
        spec = load(spec_path or resume / "spec.yaml", overrides)
        _check_workers(requested, spec)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = resume or run_dir or Path("runs") / f"{spec.name}-{stamp}"
        (check_run_dir if resume else check_new_run_dir)(out_dir)  # before the data loads
        splits = _load_data(spec, data_dir)
        run = Run(spec, splits, out_dir, workers=requested)
        if resume:
            run.resume()
            out.print(f"resuming {out_dir} after epoch {run.trainer.epoch} "
                      f"(step {run.trainer.progress.step} of the next)")
        else:
            run.start()
        out.print(f"run directory: {out_dir}")
        out.print(f"workers: {run.trainer.workers_why}")
        run.trainer.start_workers()  # fork before the progress bar starts its thread

        # The first SIGINT or SIGTERM finishes the step and saves a checkpoint; a second
        # one stops at once. Worker processes ignore both: the parent stops them.
        try:
            with _stop_on_signals() as stop:
                finished = _fit_with_progress(run, progress, lambda: stop["by"] is not None)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                run.plot()
            raise
        finally:
            run.trainer.close()
        run.plot()
        _write_report(run.report)
        if not finished:
            code, _, word = STOP_SIGNALS[stop["by"]]
            err.print(f"[yellow]{word}[/yellow] ({stop['by']}): checkpoint saved to "
                      f"{run.last_path}; continue with: netspec train --resume {out_dir}")
            raise typer.Exit(code)
        best = max(run.history, key=score)
        out.print(f"[green]done[/green]: {out_dir} (best epoch {best['epoch']}: "
                  f"test acc {100 * best.get('test_acc', float('nan')):.2f}%)")


def _write_report(write) -> None:
    """Call write() -> path of a report; a failure is a warning (the run itself is fine)."""
    try:
        with out.status("writing report.html ..."):
            path = write()
    except NetspecError as e:
        err.print(f"[yellow]warning:[/yellow] no report: {_escape(str(e))}")
    else:
        out.print(f"report: {path}")


# ------------------------------------------------------------------ report


@app.command()
def report(
    run_dir: Path = typer.Argument(..., exists=True, file_okay=False, metavar="RUN_DIR"),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="NETSPEC_DATA",
                                            help="Directory holding the dataset files."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval",
                                  help="Evaluate the best checkpoint on the test set for the "
                                       "confusion matrix and the worst images."),
):
    """Write RUN_DIR/report.html; works on finished, running and interrupted runs."""
    from netspec.report import run_spec, write_report

    with report_errors():
        spec = run_spec(run_dir)
        splits = None
        if evaluate:
            try:
                splits = _load_data(spec, data_dir)
            except NetspecError as e:
                err.print(f"[yellow]warning:[/yellow] {_escape(str(e))}; writing the report "
                          "without the test-set figures")
        with out.status("writing report.html ..."):
            path = write_report(run_dir, splits)
    out.print(f"wrote {path}")


def _workers_option(text: str) -> int | str:
    """--workers: 'auto' or a positive integer."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise typer.BadParameter(f"expected a positive integer or 'auto', got {text!r}",
                                 param_hint="--workers")
    return n


def _check_workers(requested: int | str, spec) -> None:
    """A usage error (exit 2) when `requested` workers cannot run this spec."""
    from netspec.parallel import available_cores, resolve_workers

    try:
        resolve_workers(requested, spec.infos)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--workers") from None
    cores = available_cores()
    if requested != "auto" and requested > cores:
        raise typer.BadParameter(
            f"{requested} workers but netspec may use {cores} core{'s' * (cores != 1)} here: "
            "more workers than cores only take turns, which makes the run several times "
            f"slower; use --workers {cores} or --workers auto", param_hint="--workers")


def _fit_with_progress(run, show: bool, should_stop) -> bool:
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    epochs = run.spec.train.epochs
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.2%} "
                          "{task.fields[ips]:,.0f} img/s"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=out, disable=not show, transient=True) as bar:
        task = bar.add_task("", total=None, loss=0.0, acc=0.0, ips=0.0)
        clock = {"start": None, "step0": 0}

        def on_step(step, steps, loss, acc):
            now = time.perf_counter()
            if clock["start"] is None:
                clock["start"], clock["step0"] = now, step
            rate = (step - clock["step0"]) * run.spec.train.batch_size / max(
                now - clock["start"], 1e-9)
            bar.update(task, description=f"epoch {run.trainer.epoch + 1}/{epochs}",
                       completed=step, total=steps, loss=loss, acc=acc, ips=rate)

        def on_epoch(record):
            clock["start"] = None
            line = (f"epoch {record['epoch']:>3}/{epochs}  lr {record['lr']:.4g}  "
                    f"train loss {record['train_loss']:.4f} acc {100 * record['train_acc']:.2f}%")
            for split in ("val", "test"):
                if f"{split}_acc" in record:
                    line += (f"  {split} loss {record[f'{split}_loss']:.4f} "
                             f"acc {100 * record[f'{split}_acc']:.2f}%")
            line += (f"  {record['train_seconds']:.1f} s ({record['images_per_second']:,.0f} "
                     f"img/s) + eval {record['eval_seconds']:.1f} s")
            bar.console.print(line)

        return run.fit(on_step=on_step, on_epoch=on_epoch, should_stop=should_stop)


# ------------------------------------------------------------------ eval


def _checkpoint_spec(spec_path, ckpt, checkpoint_path, overrides, force: bool, verb: str):
    """The spec to use with a checkpoint: SPEC (and --set) if given, else the one stored in it.
    A SPEC or --set that changes what the network computes is an error unless --force."""
    import yaml

    from netspec.checkpoint import evaluation_changes
    from netspec.errors import CheckpointError, DataError
    from netspec.spec import load, loads

    if spec_path is None:
        if not ckpt.spec_data:
            raise DataError(f"{checkpoint_path} holds no spec; give the SPEC file")
        spec = loads(yaml.safe_dump(ckpt.spec_data), f"{checkpoint_path}:spec", overrides)
    else:
        spec = load(spec_path, overrides)
    changes = evaluation_changes(ckpt.spec_data, spec.model_dump(mode="json"))
    if changes and not force:
        given = f"{spec_path} (with --set)" if spec_path and overrides else (spec_path or "--set")
        raise CheckpointError(
            f"{given} differs from the spec stored in {checkpoint_path} in what evaluation "
            f"computes: {'; '.join(changes)}. The weights were trained with the stored spec; "
            f"leave out SPEC and --set to use it, or pass --force to {verb} anyway")
    return spec


@app.command(name="eval")
def evaluate(
    spec_path: Path | None = typer.Argument(
        None, exists=True, dir_okay=False, metavar="SPEC",
        help="Spec file [default: the spec stored in the checkpoint]."),
    checkpoint_path: Path = typer.Option(..., "--checkpoint", "-c", exists=True, dir_okay=False,
                                         help="A checkpoints/*.npz file."),
    split: str = typer.Option("test", help="Which split to evaluate: test, train or val."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY.PATH=VALUE"),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="NETSPEC_DATA"),
    workers: str = typer.Option("auto", help="Processes that share the batches, as for train."),
    force: bool = typer.Option(False, "--force", help="Evaluate even though SPEC (or --set) "
                               "differs from the checkpoint's spec in what evaluation computes."),
    report_dir: Path | None = typer.Option(
        None, "--report", file_okay=False,
        help="Also write DIR/eval-report.html: confusion matrix and worst images."),
):
    """Evaluate a checkpoint: loss, accuracy, per-class accuracy, confusion matrix."""

    from netspec import checkpoint
    from netspec.errors import DataError
    from netspec.train import Trainer, confusion_matrix

    requested = _workers_option(workers)
    with report_errors():
        ckpt = checkpoint.load(checkpoint_path)
        spec = _checkpoint_spec(spec_path, ckpt, checkpoint_path, overrides, force, "evaluate")
        splits = _load_data(spec, data_dir)
        if split not in splits:
            raise DataError(f"no '{split}' split (available: {', '.join(splits)})")
        _check_workers(requested, spec)
        trainer = Trainer(spec, splits, workers=requested)
        trainer.plan.load_state_dict(ckpt.state, str(checkpoint_path))
        x, y = splits[split]
        trainer.start_workers()
        try:
            result = trainer.evaluate(x, y, split=split)
        finally:
            trainer.close()
    k = spec.infos[-1].out_shape[0]
    matrix = confusion_matrix(y, result.predictions, k)
    table = Table(title=f"{checkpoint_path} on {split} ({len(y):,} images): rows are true "
                        "classes, columns predictions", title_justify="left")
    table.add_column("class", justify="right")
    for j in range(k):
        table.add_column(str(j), justify="right")
    table.add_column("acc", justify="right")
    for i in range(k):
        total = matrix[i].sum()
        table.add_row(str(i), *[f"[bold]{v}[/bold]" if i == j else (str(v) if v else ".")
                                for j, v in enumerate(matrix[i])],
                      f"{100 * matrix[i, i] / total:.2f}%" if total else "-")
    out.print(table)
    out.print(f"{split} loss {result.loss:.4f}  accuracy {100 * result.accuracy:.2f}%  "
              f"({result.seconds:.2f} s, {len(y) / result.seconds:,.0f} img/s)")
    if report_dir is not None:
        from netspec.report import write_eval_report

        with report_errors(), out.status("writing eval-report.html ..."):
            path = write_eval_report(report_dir, spec, ckpt.state, str(checkpoint_path), split,
                                     x, y)
        out.print(f"report: {path}")


# ------------------------------------------------------------------ sweep


@app.command()
def sweep(
    spec_path: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="SPEC"),
    params: list[str] = typer.Option(
        [], "-p", "--param", metavar="KEY.PATH=V1,V2,...",
        help="Values to sweep (repeatable; the grid is every combination), e.g. "
             "-p train.optimizer.lr=0.01,0.05"),
    seeds: str | None = typer.Option(None, metavar="S1,S2,...",
                                     help="Seeds of each grid point (default: the spec's seed)."),
    metric: str | None = typer.Option(None, help="What 'best' means, e.g. test_acc or val_loss "
                                                 "(default: val_acc with a validation split, "
                                                 "else test_acc)."),
    workers: int | None = typer.Option(None, min=1, help="Worker processes of the embedded "
                                                         "cluster (default: one per core)."),
    scheduler: str | None = typer.Option(
        None, envvar="DASK_SCHEDULER_ADDRESS", metavar="ADDRESS",
        help="Run on this Dask cluster (e.g. tcp://host:8786) instead of an embedded one."),
    sweep_dir: Path | None = typer.Option(None, "--out", help="Sweep directory "
                                             "(default: sweeps/<name>); rerun to continue."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY.PATH=VALUE",
                                        help="Override a spec value in every trial."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Dataset directory, as the "
                                            "workers see it (default: each worker's "
                                            "NETSPEC_DATA or cache)."),
    progress: bool = typer.Option(True, help="Show the live table of trials."),
):
    """Train a spec over a grid of values times seeds, on Dask (this machine or a cluster)."""
    from netspec import sweep as sweeps

    seed_list = _seeds_option(seeds)
    if scheduler and workers:
        raise typer.BadParameter("--workers sizes the embedded cluster; a cluster's size is "
                                 "set by its `dask worker` processes", param_hint="--workers")
    if workers and workers > _cores():
        raise typer.BadParameter(f"{workers} workers but netspec may use {_cores()} cores here; "
                                 "trials on more workers than cores only take turns",
                                 param_hint="--workers")
    with report_errors(), _stop_on_signals() as stop:
        grid = sweeps.parse_params(params)
        client = None
        if scheduler:
            client = sweeps.connect(scheduler)
        where = scheduler or f"an embedded cluster of {workers or _cores()} worker processes"
        live = _SweepTable(progress, f"on {where}")
        try:
            with live:
                result = sweeps.run(spec_path, grid, seed_list, client, out=sweep_dir,
                                    overrides=overrides, metric=metric, data_dir=data_dir,
                                    workers=workers, on_update=live.update,
                                    should_stop=lambda: stop["by"] is not None)
        finally:
            if client is not None:
                client.close()
    _print_sweep(result)
    if result.interrupted:
        code, _, word = STOP_SIGNALS[stop["by"] or "SIGINT"]
        err.print(f"[yellow]{word}[/yellow]: running trials saved checkpoints; rerun the "
                  f"same command (--out {_relative(result.out)}) to continue")
        raise typer.Exit(code)
    if any(r["status"] == "failed" for r in result.rows):
        raise typer.Exit(1)


def _seeds_option(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise typer.BadParameter(f"expected distinct non-negative integers separated by "
                                 f"commas, e.g. 0,1,2; got {text!r}", param_hint="--seeds")
    return seeds


def _relative(path: Path) -> str:
    """`path` relative to the current directory when it lies below it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _cores() -> int:
    from netspec.parallel import available_cores

    return available_cores()


@contextlib.contextmanager
def _stop_on_signals():
    """{"by": None}, set to "SIGINT" or "SIGTERM" by the first of them; a second one raises
    (KeyboardInterrupt or Terminated, see STOP_SIGNALS) to stop at once."""
    import signal

    stop = {"by": None}

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        if stop["by"] is not None:
            raise STOP_SIGNALS[name][1]
        stop["by"] = name

    previous = {s: signal.signal(getattr(signal, s), on_signal) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(getattr(signal, s), handler)


class _SweepTable:
    """The live table of trials: overrides, seed, state, epochs, best metric, worker."""

    SHOWN = 20  # rows; running and failed trials first

    def __init__(self, show: bool, where: str):
        from rich.live import Live

        self.rows, self.where = {}, where
        self.live = Live(console=out, transient=True, refresh_per_second=4,
                         get_renderable=self.render) if show else None

    def __enter__(self):
        self.live and self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live and self.live.__exit__(*exc)

    def update(self, row: dict) -> None:
        self.rows[row["trial"]] = row

    def render(self) -> Table:
        rows = list(self.rows.values())
        counts = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        paths = list(rows[0]["overrides"]) if rows else []
        table = Table(title=f"trials {self.where}: " + ", ".join(
            f"{n} {s}" for s, n in counts.items()),
                      title_justify="left")
        for col in ("trial", *paths, "seed", "state", "epochs", "best", "worker"):
            table.add_column(col)
        order = {"running": 0, "failed": 1, "queued": 2}
        for r in sorted(rows, key=lambda r: order.get(r["status"], 3))[:self.SHOWN]:
            table.add_row(r["trial"], *[_value(r["overrides"][p]) for p in paths], str(r["seed"]),
                          r["status"], str(r["epochs"]), _score(r["best"], False), r["worker"])
        return table


def _value(v) -> str:
    return _escape(f"{v:g}" if isinstance(v, float) else json.dumps(v) if not isinstance(
        v, str) else v)


def _score(value, percent: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def _print_sweep(result) -> None:
    """Failed trials with their messages, then the table grouped by overrides."""
    from netspec.sweep_report import groups

    for r in result.rows:
        if r["status"] == "failed":
            where = " ".join(f"{k}={_value(v)}" for k, v in r["overrides"].items())
            err.print(f"[red]failed[/red] trial {r['trial']} ({where} seed {r['seed']}): "
                      f"{_escape(r['message'])}")
    m, percent = result.metric, result.metric.endswith("_acc")
    table = Table(title=f"{m}{' (%)' if percent else ''}: mean ± std over seeds, best first",
                  title_justify="left")
    for col in result.grid:
        table.add_column(col, min_width=len(col))
    for col in ("seeds", f"final {m}", f"best {m}", "s/trial"):
        table.add_column(col, justify="right")
    for g in groups(result.rows, result.higher_is_better):
        cells = []
        for which in ("final", "best"):
            mean, std = g[f"{which}_mean"], g[f"{which}_std"]
            cells.append(_score(mean, percent) + (f" ± {_score(std, percent)}"
                                                   if std is not None else ""))
        done = f"{g['done']}/{g['trials']}" + (f" ({g['failed']} failed)" if g["failed"] else "")
        seconds = "-" if g["seconds"] is None else f"{g['seconds']:.1f}"
        table.add_row(*[_value(g["overrides"][p]) for p in result.grid], done, *cells, seconds)
    out.print(table)
    out.print(f"wrote {', '.join(_relative(p) for p in result.files)}")


# ------------------------------------------------------------------ bench


@app.command()
def bench(
    spec_path: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="SPEC"),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", min=1,
                                          help="[default: the spec's train.batch_size]"),
    repeats: int = typer.Option(20, min=1, help="Timed steps; the table shows medians."),
    dtype: str = typer.Option("float32", help="float32 or float64."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY.PATH=VALUE"),
):
    """Per-layer forward/backward timing of a training step (like `caffe time`)."""
    import numpy as np

    from netspec.bench import time_layers
    from netspec.parallel import resolve_workers
    from netspec.plan import compile
    from netspec.spec import load

    if dtype not in ("float32", "float64"):
        raise typer.BadParameter("choose float32 or float64", param_hint="--dtype")
    with report_errors():
        spec = load(spec_path, overrides)
        plan = compile(spec, dtype)
        batch = batch_size or spec.train.batch_size
        report = time_layers(plan, batch, repeats, np.random.default_rng(spec.seed),
                             loss=spec.loss, optimizer=spec.train.optimizer)
    table = Table(title=f"{spec.name}: batch {batch}, {dtype}, median of {repeats} steps (ms)",
                  title_justify="left")
    for col in ("#", "name", "type", "output shape", "forward", "backward", "share"):
        table.add_column(col, justify="left" if col in ("name", "type", "output shape")
                         else "right")
    for i, t in enumerate(report.layers):
        table.add_row(str(i), t.name, t.type, _shape(t.out_shape), f"{t.forward_ms:.3f}",
                      f"{t.backward_ms:.3f}", f"{100 * t.share:.1f}%")
    table.add_section()
    table.add_row("", "loss", "", "", f"{report.loss_ms:.3f}", "", "")
    table.add_row("", "optimizer step", "", "", f"{report.optimizer_ms:.3f}", "", "")
    table.add_row("", "layers total", "", "", f"{report.forward_ms:.3f}",
                  f"{report.backward_ms:.3f}", "")
    out.print(table)
    out.print(f"step {report.step_ms:.2f} ms (min {report.step_min_ms:.2f}, max "
              f"{report.step_max_ms:.2f}): {report.images_per_s:,.0f} images/s; "
              f"an epoch of 60,000 images ~ {60000 / report.images_per_s:.1f} s")
    workers, why = resolve_workers("auto", spec.infos)
    if workers > 1:
        out.print(f"timed in one process; `netspec train` splits each batch across {why}")


# ------------------------------------------------------------------ export


@app.command(name="export")
def export_onnx(
    spec_path: Path | None = typer.Argument(
        None, exists=True, dir_okay=False, metavar="SPEC",
        help="Spec file (default: the spec stored in the checkpoint)."),
    output: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="The .onnx file to "
                                "write; an existing file is replaced only if netspec wrote it."),
    checkpoint_path: Path | None = typer.Option(
        None, "--checkpoint", "-c", exists=True, dir_okay=False,
        help="A checkpoints/*.npz file (default: the spec's initial weights)."),
    check: bool = typer.Option(False, "--check", help="Before writing, verify the model: ONNX "
                               "checker, shapes at every layer, onnxruntime against netspec on "
                               "the test set."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY.PATH=VALUE"),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="NETSPEC_DATA"),
    force: bool = typer.Option(False, "--force", help="Export even though SPEC (or --set) "
                               "differs from the checkpoint's spec in what the network computes."),
):
    """Export a network to ONNX (opset 17), optionally verified by onnxruntime."""
    from netspec import checkpoint
    from netspec.onnx_export import check_output, import_onnx, save, to_onnx
    from netspec.plan import compile
    from netspec.spec import load

    if spec_path is None and checkpoint_path is None:
        raise typer.BadParameter("give a SPEC file, or a --checkpoint", param_hint="SPEC")
    with report_errors():
        import_onnx()  # before any work: a missing extra is exit 1 with the pip command
        check_output(output)  # and so is an -o that would overwrite a file not netspec's
        ckpt = checkpoint.load(checkpoint_path) if checkpoint_path else None
        if ckpt is None:
            spec = load(spec_path, overrides)
        else:
            spec = _checkpoint_spec(spec_path, ckpt, checkpoint_path, overrides, force, "export")
        plan = compile(spec, "float32")
        if ckpt is not None:
            plan.load_state_dict(ckpt.state, str(checkpoint_path))
        norm = ckpt.meta.get("normalize") if ckpt is not None else None  # train records it
        if not norm or norm.get("normalize") != spec.data.normalize:  # (--set may change it)
            norm = None
        splits = None
        if check or (norm is None and spec.data.normalize == "standardize"):
            splits = _load_data(spec, data_dir)  # the real test set, and the training mean/std
            norm = norm or {"normalize": splits.normalize, "mean": splits.mean, "std": splits.std}
        model = to_onnx(spec, plan, norm, source=str(checkpoint_path or ""))
        if check:
            from netspec.onnx_check import verify

            x, y = splits["test"]
            report = verify(model, spec, plan, x, y)
            out.print(_export_check_table(report, spec))
            if not report.passed:
                err.print(f"[red]FAILED[/red]: the model does not match netspec; "
                          f"{_escape(str(output))} not written")
                raise typer.Exit(1)
        save(model, output)
    size = output.stat().st_size
    meta = {p.key: p.value for p in model.metadata_props}
    norm = meta["netspec.normalize"]
    if "netspec.mean" in meta:
        norm += f", mean {meta['netspec.mean']}, std {meta['netspec.std']}"
    out.print(f"[green]wrote[/green] {_escape(str(output))} ({size / 1024:,.1f} kB; opset "
              f"{model.opset_import[0].version}, IR version {model.ir_version}; "
              f"{len(model.graph.node)} nodes; input normalisation in the metadata: {norm})")


def _export_check_table(report, spec) -> Table:
    table = Table(title=f"{spec.name}: ONNX model against netspec", title_justify="left")
    for col in ("check", "layer / batch", "netspec", "ONNX", ""):
        table.add_column(col)
    for r in report.rows:
        table.add_row(r.check, _escape(r.subject), _escape(r.expected), _escape(r.found),
                      "[green]ok[/green]" if r.passed else "[red]FAIL[/red]")
    return table


def main():
    app()


if __name__ == "__main__":
    main()
