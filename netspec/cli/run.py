"""Verbs of a training run: train (with its progress bar and signal handling), report, eval."""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path

import typer
from rich.table import Table

from netspec.cli.app import app
from netspec.cli.common import (
    BLAS_HELP,
    CONV_HELP,
    EVAL_CONV_HELP,
    FUSE_HELP,
    STOP_SIGNALS,
    SetOption,
    checkpoint_spec,
    describe_plan,
    err,
    escape,
    load_data,
    out,
    plan_options,
    report_errors,
    stop_on_signals,
)
from netspec.errors import NetspecError
from netspec.viz.plots import plot_run
from netspec.viz.report import write_report

# ------------------------------------------------------------------ train


@app.command()
def train(
    spec_path: Path | None = typer.Argument(
        None, exists=True, dir_okay=False, metavar="SPEC",
        help="Spec file; optional with --resume (the run's spec.yaml is used)."),
    overrides: list[str] = SetOption,
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="NETSPEC_DATA",
                                            help="Directory holding the dataset files."),
    run_dir: Path | None = typer.Option(None, "--out", help="Run directory "
                                           "(default: runs/<name>-<timestamp>)."),
    resume: Path | None = typer.Option(None, "--resume", file_okay=False, exists=True,
                                          help="Continue the run in this directory."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    workers: str = typer.Option(
        "auto", help="Processes that share each batch: a number, or 'auto' (one per core for "
                     "convolutional nets, on Linux; else 1)."),
    blas_threads: int | None = typer.Option(None, "--blas-threads", min=1, help=BLAS_HELP),
    conv: str = typer.Option("auto", help=CONV_HELP),
    eval_conv: str = typer.Option("im2col", "--eval-conv", help=EVAL_CONV_HELP),
    fuse: bool = typer.Option(True, help=FUSE_HELP),
    init: Path | None = typer.Option(
        None, "--init", exists=True, dir_okay=False, metavar="WEIGHTS",
        help="Start from these weights (a checkpoint, or `netspec import --weights`): loaded "
             "by name and shape; the rest starts fresh."),
):
    """Train a spec; writes spec.yaml, metrics.jsonl, checkpoints and curves.png."""
    import time

    from netspec import fsio
    from netspec.spec.model import load
    from netspec.train.inputs import with_classes
    from netspec.train.run import Run, score

    if spec_path is None and resume is None:
        raise typer.BadParameter("give a SPEC file, or --resume RUN_DIR", param_hint="SPEC")
    if resume and run_dir and resume != run_dir:
        raise typer.BadParameter("--out and --resume name different directories")
    if resume and init:
        raise typer.BadParameter("--init starts a new run; a resumed run continues from its "
                                 "own checkpoint", param_hint="--init")
    with report_errors():
        spec = load(spec_path or resume / "spec.yaml", overrides)
        options = plan_options(spec, workers, blas_threads, conv, fuse, eval_conv)
        created = None
        if resume or run_dir:
            out_dir = resume or run_dir
            (fsio.check_run_dir if resume else fsio.check_new_run_dir)(out_dir)
            fsio.check_unlocked(out_dir)  # before the data loads
        else:  # a new directory of its own, even for two runs started in the same second
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out_dir = created = fsio.unique_dir("runs", f"{spec.name}-{stamp}")
        run = None
        try:
            splits = load_data(spec, data_dir)
            spec = with_classes(spec, splits.dataset)  # the class names travel with the run
            run = Run(spec, splits, out_dir, options=options)
            found = None
            if resume:
                run.resume()
            else:
                found = run.init_from(init) if init is not None else None  # before the dir
                run.start()
            if found is not None:
                _report_init(found, init)
        except BaseException:
            if run is not None:
                run.close()
            if created is not None:
                fsio.remove_if_empty(created)
            raise
        try:
            _train(run, resume, progress, score)
        finally:
            run.close()


def _train(run, resume, progress, score) -> None:
    """Train a started (or resumed) run with the progress bar; exit 130/143 when stopped."""
    out_dir = run.out
    if resume:
        out.print(f"resuming {escape(str(out_dir))} after epoch {run.trainer.epoch} "
                  f"(step {run.trainer.progress.step} of the next)")
    out.print(f"run directory: {escape(str(out_dir))}")
    if run.spec.data.augment is not None:
        from netspec.data.augment import describe

        out.print(f"augment: {describe(run.spec.data.augment)} (training batches)")
    for line in describe_plan(run.trainer.plan):
        out.print(escape(line))
    run.trainer.start_workers()  # fork before the progress bar starts its thread

    # The first SIGINT or SIGTERM finishes the step and saves a checkpoint; a second
    # one stops at once. Worker processes ignore both: the parent stops them.
    try:
        with stop_on_signals() as stop:
            finished = _fit_with_progress(run, progress, lambda: stop["by"] is not None)
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            plot_run(run)
        raise
    finally:
        run.trainer.close()
    plot_run(run)
    _write_report(lambda: write_report(run.out, run.splits))
    if not finished:
        code, _, word = STOP_SIGNALS[stop["by"]]
        err.print(f"[yellow]{word}[/yellow] ({stop['by']}): checkpoint saved to "
                  f"{escape(str(run.last_path))}; continue with: netspec train --resume "
                  f"{escape(shlex.quote(str(out_dir)))}")
        raise typer.Exit(code)
    best = max(run.history, key=score) if run.history else {"epoch": 0}
    out.print(f"[green]done[/green]: {escape(str(out_dir))} (best epoch {best['epoch']}: "
              f"test acc {100 * best.get('test_acc', float('nan')):.2f}%)")


def _report_init(found, path) -> None:
    """What --init loaded, what starts fresh, and what the file holds that the net has not."""
    out.print(f"init: loaded {len(found.loaded)} tensors from {escape(str(path))}")
    for label, names in (("initialised fresh", found.fresh), ("not used from the file",
                                                              found.unused)):
        if names:
            shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more"
                                             if len(names) > 12 else "")
            out.print(f"init: {label} ({len(names)}): {escape(shown)}")


def _write_report(write) -> None:
    """Call write() -> path of a report; a failure is a warning (the run itself is fine)."""
    try:
        with out.status("writing report.html ..."):
            path = write()
    except NetspecError as e:
        err.print(f"[yellow]warning:[/yellow] no report: {escape(str(e))}")
    else:
        out.print(f"report: {escape(str(path))}")


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
    from netspec.train.inputs import recorded_data_dir, run_norm
    from netspec.viz.report import run_spec, write_report

    with report_errors():
        spec = run_spec(run_dir)
        splits = None
        if evaluate:
            try:
                splits = load_data(spec, data_dir or recorded_data_dir(run_dir),
                                   run_norm(run_dir, spec))
            except NetspecError as e:
                err.print(f"[yellow]warning:[/yellow] {escape(str(e))}; writing the report "
                          "without the test-set figures")
        with out.status("writing report.html ..."):
            path = write_report(run_dir, splits)
    out.print(f"wrote {escape(str(path))}")


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

        return run.fit(on_step=on_step, on_epoch=on_epoch, should_stop=should_stop,
                       unlock=False)  # the caller writes the report, then closes the run


# ------------------------------------------------------------------ eval


@app.command(name="eval")
def evaluate(
    spec_path: Path | None = typer.Argument(
        None, exists=True, dir_okay=False, metavar="SPEC",
        help="Spec file (default: the spec stored in the checkpoint)."),
    checkpoint_path: Path = typer.Option(..., "--checkpoint", "-c", exists=True, dir_okay=False,
                                         help="A checkpoints/*.npz file."),
    split: str = typer.Option("test", help="Which split to evaluate: test, train or val."),
    overrides: list[str] = SetOption,
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="NETSPEC_DATA"),
    workers: str = typer.Option("auto", help="Processes that share the batches, as for train."),
    blas_threads: int | None = typer.Option(None, "--blas-threads", min=1, help=BLAS_HELP),
    eval_conv: str = typer.Option("im2col", "--eval-conv", help=EVAL_CONV_HELP),
    force: bool = typer.Option(False, "--force", help="Evaluate even though SPEC (or --set) "
                               "differs from the checkpoint's spec in what evaluation computes."),
    report_dir: Path | None = typer.Option(
        None, "--report", file_okay=False,
        help="Also write DIR/eval-report.html: confusion matrix and worst images."),
):
    """Evaluate a checkpoint: loss, accuracy, per-class accuracy, confusion matrix."""

    from netspec import checkpoint
    from netspec.errors import DataError
    from netspec.train.inputs import stored_norm
    from netspec.train.trainer import Trainer, confusion_matrix

    with report_errors():
        ckpt = checkpoint.load(checkpoint_path)
        spec = checkpoint_spec(spec_path, ckpt, checkpoint_path, overrides, force, "evaluate")
        splits = load_data(spec, data_dir, stored_norm(ckpt.meta, spec))
        if split not in splits:
            raise DataError(f"no '{split}' split (available: {', '.join(splits)})")
        trainer = Trainer(spec, splits, options=plan_options(spec, workers, blas_threads,
                                                                  eval_conv=eval_conv))
        trainer.plan.load_state_dict(ckpt.state, str(checkpoint_path))
        x, y = splits[split]
        trainer.start_workers()
        try:
            result = trainer.evaluate(x, y, split=split)
        finally:
            trainer.close()
    k = spec.infos[-1].out_shape[0]
    names = spec.data.classes or (ckpt.meta.get("data") or {}).get("classes") or \
        getattr(splits.dataset, "class_names", None)
    matrix = confusion_matrix(y, result.predictions, k)
    table = Table(title=f"{escape(str(checkpoint_path))} on {escape(split)} ({len(y):,} "
                        "images): rows are true classes, columns predictions",
                  title_justify="left")
    table.add_column("class", justify="right")
    for j in range(k):
        table.add_column(str(j), justify="right")
    table.add_column("acc", justify="right")
    for i in range(k):
        total = matrix[i].sum()
        label = escape(f"{i} {names[i]}" if names else str(i))
        table.add_row(label, *[f"[bold]{v}[/bold]" if i == j else (str(v) if v else ".")
                               for j, v in enumerate(matrix[i])],
                      f"{100 * matrix[i, i] / total:.2f}%" if total else "-")
    out.print(table)
    out.print(f"{escape(split)} loss {result.loss:.4f}  accuracy {100 * result.accuracy:.2f}%  "
              f"({result.seconds:.2f} s, {len(y) / result.seconds:,.0f} img/s)")
    if report_dir is not None:
        from netspec.viz.report import write_eval_report

        with report_errors(), out.status("writing eval-report.html ..."):
            path = write_eval_report(report_dir, spec, ckpt.state, str(checkpoint_path), split,
                                     x, y, names)
        out.print(f"report: {escape(str(path))}")
