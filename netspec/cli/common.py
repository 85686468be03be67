"""What the verbs share: the consoles (`out`, `err`), `report_errors` (problems -> exit
codes), number formatting, and options and helpers used by several verbs (workers,
signals, loading data, the spec of a checkpoint)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import rich.markup
import typer
from rich.console import Console, ConsoleDimensions

from netspec.errors import NetspecError


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


def _set_items(items: list[str]) -> list[str]:
    """--set items must read KEY.PATH=VALUE: one without '=' is a usage error (exit 2)."""
    for item in items or []:
        key = item.partition("=")[0].strip()
        if "=" not in item or not key:
            raise typer.BadParameter(f"expected key.path=value, e.g. --set train.epochs=1; got "
                                     f"{item!r}", param_hint="--set")
    return items


def _set_option(help: str):
    return typer.Option([], "--set", metavar="KEY.PATH=VALUE", help=help, callback=_set_items)


# The --set option: every command that takes a spec takes it.
SetOption = _set_option("Override a spec value (repeatable), e.g. --set train.epochs=1")
SetEachOption = _set_option("Override a value in every spec given (repeatable), e.g. "
                            "--set train.epochs=1")
SetTrialsOption = _set_option("Override a spec value in every trial (repeatable).")


@contextlib.contextmanager
def report_errors():
    """Turn NetspecError into printed problems and exit code 1, Ctrl-C into 130 (SIGTERM that
    interrupts at once, see `run.train`, into 143)."""
    try:
        yield
    except NetspecError as e:
        for problem in e.problems:
            err.print(f"[red]error:[/red] {escape(str(problem))}")
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
        err.print(f"[red]error:[/red] {escape(text)}")
        raise typer.Exit(1) from None


class Terminated(KeyboardInterrupt):
    """A second SIGTERM: stop at once, like a second Ctrl-C."""


STOP_SIGNALS = {"SIGINT": (130, KeyboardInterrupt, "interrupted"),
                "SIGTERM": (143, Terminated, "terminated")}  # signal -> exit code, ...


def escape(text: str) -> str:
    """Show text literally: rich's escape also handles backslashes before '[' (a bare
    replace let `x\\[/foo]` in a spec through as a markup tag and crashed the printer)."""
    return rich.markup.escape(text)


def output_file(text: str, option: str, existing_dir: bool = True) -> Path:
    """An output FILE option as a Path: a usage error (exit 2) when it names a directory by a
    trailing slash (`-o out/`, even where out/ does not exist yet), or (with `existing_dir`)
    by being one."""
    import os

    path = Path(text)
    slash = text.endswith(("/", os.sep))
    if slash or (existing_dir and os.path.isdir(path)):
        what = "names a directory (it ends in a slash)" if slash else "is a directory"
        raise typer.BadParameter(f"{text!r} {what}; {option} takes a file name, e.g. "
                                 f"{path / 'name.ext'}", param_hint=option)
    return path


def fmt_shape(shape) -> str:
    return str(tuple(shape))


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def load_data(spec, data_dir, norm=None, download: bool = True):
    """Find (or download, unless not `download`), check, decode and normalise the spec's data,
    showing progress (with `norm`, a checkpoint's normalisation, instead of the data's
    statistics)."""
    from netspec.train.inputs import load_splits

    with data_progress() as progress:
        splits = load_splits(spec, data_dir, progress=progress, norm=norm,
                             download_missing=download)
    ds = splits.dataset
    counts = ", ".join(f"{k} {len(v[1]):,}" for k, v in splits.items())
    out.print(escape(f"data: {ds.name} from {ds.path} ({counts}; normalize "
                     f"{spec.data.normalize})"))
    if ds.held_out:
        h = ds.held_out
        out.print(f"data: the test split is {h['count']:,} samples held out of the data "
                  f"(data.test_fraction {h['fraction']:g}, stratified, split_seed {h['seed']})")
    for note in ds.notes:
        out.print(f"note: {escape(note)}")
    if ds.skipped:
        err.print(f"[yellow]warning:[/yellow] {len(ds.skipped)} bad image file"
                  f"{'s' * (len(ds.skipped) > 1)} left out (data.bad_files: skip); the run "
                  "directory lists them in skipped-files.txt")
    return splits


@contextlib.contextmanager
def data_progress():
    """progress(name, done, total) for downloads and decoding: a bar on a terminal, drawn
    without a thread (decoding forks worker processes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   console=err, transient=True, auto_refresh=False)
    tasks = {}

    def progress(name, done, total):
        if name not in tasks:
            tasks[name] = bar.add_task(escape(name), total=total)
        bar.update(tasks[name], completed=done, total=total)
        bar.refresh()
        if total and done == total and name.endswith((".gz", ".tar.gz")):
            out.print(escape(f"downloaded {name} ({done:,} bytes)"))

    with bar:
        yield progress


def workers_option(text: str) -> int | str:
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


BLAS_HELP = "BLAS threads of each process (default: the cores shared among the workers)."
CONV_HELP = ("Every conv2d's training algorithm: auto (by rule, per layer), im2col, stacked or "
             "winograd (where a layer cannot run it: im2col).")
EVAL_CONV_HELP = ("Inference's conv algorithm: im2col, or auto (3x3 convs by Winograd where it "
                  "pays; eval results then differ from im2col's by rounding).")
FUSE_HELP = ("Run fusable layer chains as one (conv + average pool and relu + max pool; in "
             "eval, conv + batchnorm + relu).")


def plan_options(spec, workers: str, blas_threads: int | None = None, conv: str = "auto",
                 fuse: bool = True, eval_conv: str = "im2col"):
    """The resolved PlanOptions of --workers, --blas-threads, --conv, --fuse and --eval-conv for
    `spec`
    (netspec/plan/options.py); a request that cannot run here is a usage error (exit 2)."""
    from netspec.plan.options import PlanOptions, resolve

    try:
        options = PlanOptions(workers=workers_option(workers), blas_threads=blas_threads,
                              conv=conv, fuse=fuse, eval_conv=eval_conv)
        return resolve(options, spec.infos, spec.train.batch_size)
    except ValueError as e:
        hint = ("--eval-conv" if "eval_conv" in str(e) else "--conv" if "conv" in str(e)
                else "--workers")
        raise typer.BadParameter(str(e), param_hint=hint) from None


def describe_plan(plan) -> list[str]:
    """The lines `netspec train` and `netspec bench` print about how the plan runs."""
    from netspec.plan import fuse

    lines = [f"plan: {plan.options.describe()}"]
    algorithms = plan.algorithms()
    if algorithms:
        lines.append("conv: " + ", ".join(f"{k} {v}" for k, v in algorithms.items()))
    infos = [step.info for step in plan.steps]
    lines += [f"fused: {line}" for line in fuse.describe(infos, plan.fused)]
    return lines


@contextlib.contextmanager
def stop_on_signals():
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


def checkpoint_spec(spec_path, ckpt, checkpoint_path, overrides, force: bool, verb: str):
    """The spec to use with a checkpoint: SPEC (and --set) if given, else the one stored in it.
    A SPEC or --set that changes what the network computes is an error unless --force."""
    import yaml

    from netspec.checkpoint import evaluation_changes
    from netspec.errors import CheckpointError, DataError
    from netspec.spec.model import load, loads, resolved_data
    from netspec.train.inputs import with_stored_classes

    if spec_path is None:
        if not ckpt.spec_data:
            raise DataError(f"{checkpoint_path} holds no spec; give the SPEC file")
        spec = loads(yaml.safe_dump(ckpt.spec_data), f"{checkpoint_path}:spec", overrides)
    else:
        spec = load(spec_path, overrides)
    stored = resolved_data(ckpt.spec_data) if ckpt.spec_data else {}
    if spec.data.classes is None and (stored.get("data") or {}).get("classes"):
        spec = with_stored_classes(spec, stored["data"]["classes"])  # the data's, as trained
    changes = evaluation_changes(stored, spec.resolved())  # both with every default out
    if changes and not force:
        given = f"{spec_path} (with --set)" if spec_path and overrides else (spec_path or "--set")
        raise CheckpointError(
            f"{given} differs from the spec stored in {checkpoint_path} in what evaluation "
            f"computes: {'; '.join(changes)}. The weights were trained with the stored spec; "
            f"leave out SPEC and --set to use it, or pass --force to {verb} anyway")
    return spec
