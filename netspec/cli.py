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

import rich.markup
import typer
from rich.console import Console
from rich.table import Table

from netspec.errors import NetspecError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
    help="Declare a neural network in YAML; validate, gradient-check, train and time it.",
)
out = Console(highlight=False, soft_wrap=True)  # long paths stay on one line
err = Console(stderr=True, highlight=False, soft_wrap=True)

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
def schema(output: Path | None = typer.Option(None, "--out", "-o",
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
    from netspec.errors import DataError

    with out.status(f"loading {spec.data.dataset} ..."):
        ds = load_dataset(spec.data.dataset, data_dir=data_dir, progress=_download_progress)
    sample = ds.input_shape
    if math.prod(sample) != math.prod(spec.input.shape):
        raise DataError(f"{ds.name} samples have shape {list(sample)} but input.shape is "
                        f"{list(spec.input.shape)}; set input.shape to {list(sample)}")
    classes = spec.infos[-1].out_shape
    if spec.data.classes is None and classes != (ds.num_classes,):
        raise DataError(f"{ds.name} has {ds.num_classes} classes but the network ends with "
                        f"shape {tuple(classes)}; set out_features: {ds.num_classes} on the "
                        "last layer (or data.num_classes)")
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
    import signal
    import time

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
        splits = _load_data(spec, data_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = resume or run_dir or Path("runs") / f"{spec.name}-{stamp}"
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

        stop = {"requested": False}

        def on_sigint(signum, frame):
            if stop["requested"]:
                raise KeyboardInterrupt
            stop["requested"] = True

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            finished = _fit_with_progress(run, progress, lambda: stop["requested"])
        finally:
            signal.signal(signal.SIGINT, previous)
            run.trainer.close()
            run.plot()
        if not finished:
            err.print(f"[yellow]interrupted[/yellow]: checkpoint saved to {run.last_path}; "
                      f"continue with: netspec train --resume {out_dir}")
            raise typer.Exit(130)
        best = max(run.history, key=score)
        out.print(f"[green]done[/green]: {out_dir} (best epoch {best['epoch']}: "
                  f"test acc {100 * best.get('test_acc', float('nan')):.2f}%)")


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
    from netspec.parallel import resolve_workers

    try:
        resolve_workers(requested, spec.infos)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--workers") from None


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
):
    """Evaluate a checkpoint: loss, accuracy, per-class accuracy, confusion matrix."""
    import yaml

    from netspec import checkpoint
    from netspec.errors import DataError
    from netspec.spec import load, loads
    from netspec.train import Trainer, confusion_matrix

    requested = _workers_option(workers)
    with report_errors():
        ckpt = checkpoint.load(checkpoint_path)
        if spec_path is None:
            if not ckpt.spec_data:
                raise DataError(f"{checkpoint_path} holds no spec; give the SPEC file")
            spec = loads(yaml.safe_dump(ckpt.spec_data), f"{checkpoint_path}:spec", overrides)
        else:
            spec = load(spec_path, overrides)
        splits = _load_data(spec, data_dir)
        if split not in splits:
            raise DataError(f"no '{split}' split (available: {', '.join(splits)})")
        _check_workers(requested, spec)
        trainer = Trainer(spec, splits, workers=requested)
        trainer.plan.load_state_dict(ckpt.state, str(checkpoint_path))
        x, y = splits[split]
        trainer.start_workers()
        try:
            result = trainer.evaluate(x, y)
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


def main():
    app()


if __name__ == "__main__":
    main()
