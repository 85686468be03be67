"""`netspec sweep`: a grid of trials on Dask, its live table and the summary table."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from netspec.cli.app import app
from netspec.cli.common import (
    STOP_SIGNALS,
    SetTrialsOption,
    err,
    escape,
    out,
    report_errors,
    stop_on_signals,
)


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
    overrides: list[str] = SetTrialsOption,
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Dataset directory, as the "
                                            "workers see it (default: each worker's "
                                            "NETSPEC_DATA or cache)."),
    progress: bool = typer.Option(True, help="Show the live table of trials."),
):
    """Train a spec over a grid of values times seeds, on Dask (this machine or a cluster)."""
    from netspec.errors import SpecError
    from netspec.sweep import runner as sweeps

    seed_list = _seeds_option(seeds)
    try:
        grid = sweeps.parse_params(params)
    except SpecError as e:  # the option's syntax: a usage error
        raise typer.BadParameter("; ".join(p.message for p in e.problems),
                                 param_hint=e.problems[0].file) from None
    if scheduler and workers:
        raise typer.BadParameter("--workers sizes the embedded cluster; a cluster's size is "
                                 "set by its `dask worker` processes", param_hint="--workers")
    if workers and workers > _cores():
        raise typer.BadParameter(f"{workers} workers but netspec may use {_cores()} cores here; "
                                 "trials on more workers than cores only take turns",
                                 param_hint="--workers")
    with report_errors(), stop_on_signals() as stop:
        again = _command(spec_path, params, seeds, metric, workers, scheduler, sweep_dir,
                         overrides, data_dir)
        client = None
        if scheduler:
            client = sweeps.connect(scheduler)
        where = scheduler or f"an embedded cluster of {workers or _cores()} worker processes"
        live = _SweepTable(progress, f"on {escape(where)}", metric)
        try:
            with live:
                result = sweeps.run(spec_path, grid, seed_list, client, out=sweep_dir,
                                    overrides=overrides, metric=metric, data_dir=data_dir,
                                    workers=workers, on_update=live.update,
                                    should_stop=lambda: stop["by"] is not None)
        except KeyboardInterrupt:  # a second Ctrl-C (or SIGTERM): summary.csv is written
            err.print("[yellow]stopped at once[/yellow]: the trials that were running are "
                      "marked interrupted in summary.csv and keep their last checkpoint; "
                      f"continue with: {escape(again)}")
            raise
        finally:
            if client is not None:
                client.close()
    _print_sweep(result)
    if result.interrupted:
        code, _, word = STOP_SIGNALS[stop["by"] or "SIGINT"]
        err.print(f"[yellow]{word}[/yellow]: running trials saved checkpoints; rerun the "
                  f"same command to continue: {escape(again)}")
        raise typer.Exit(code)
    if any(r["status"] == "failed" for r in result.rows):
        raise typer.Exit(1)


def _command(spec_path, params, seeds, metric, workers, scheduler, sweep_dir, overrides,
             data_dir) -> str:
    """The command line that continues this sweep: the same options, and --out its directory
    (a rerun skips finished trials and resumes interrupted ones)."""
    import shlex

    from netspec.spec.model import load

    out_dir = sweep_dir or Path("sweeps") / load(spec_path, overrides).name
    words = ["netspec", "sweep", str(spec_path)]
    words += [w for p in params for w in ("-p", p)] + [w for o in overrides for w in ("--set", o)]
    for option, value in (("--seeds", seeds), ("--metric", metric), ("--workers", workers),
                          ("--scheduler", scheduler), ("--data-dir", data_dir),
                          ("--out", _relative(out_dir))):
        if value is not None:
            words += [option, str(value)]
    return shlex.join(words)


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
    from netspec.plan.options import available_cores

    return available_cores()


class _SweepTable:
    """The live table of trials: overrides, seed, state, epochs, best metric, worker."""

    SHOWN = 20  # rows; running and failed trials first

    def __init__(self, show: bool, where: str, metric: str | None = None):
        from rich.live import Live

        self.rows, self.where = {}, where
        self.percent = metric is None or metric.endswith("_acc")  # the default is an accuracy
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
        order = {"running": 0, "failed": 1, "queued": 2}
        for col in ("trial", *paths, "seed", "state", "epochs"):
            table.add_column(escape(col))
        table.add_column("best (%)" if self.percent else "best", justify="right")
        shown = sorted(rows, key=lambda r: order.get(r["status"], 3))[:self.SHOWN]
        width = max((len(r["worker"]) for r in shown), default=6)
        table.add_column("worker", no_wrap=True, min_width=width)  # an address, never cut
        for r in shown:
            table.add_row(r["trial"], *[_value(r["overrides"][p]) for p in paths], str(r["seed"]),
                          r["status"], str(r["epochs"]), _score(r["best"], self.percent),
                          escape(r["worker"]))
        return table


def _value(v) -> str:
    return escape(f"{v:g}" if isinstance(v, float) else json.dumps(v) if not isinstance(
        v, str) else v)


def _score(value, percent: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def _print_sweep(result) -> None:
    """Failed trials with their messages, then the table grouped by overrides."""
    from netspec.sweep.results import groups

    for r in result.rows:
        if r["status"] == "failed":
            where = " ".join(f"{escape(k)}={_value(v)}" for k, v in r["overrides"].items())
            err.print(f"[red]failed[/red] trial {r['trial']} ({where} seed {r['seed']}): "
                      f"{escape(r['message'])}")
    m, percent = result.metric, result.metric.endswith("_acc")
    table = Table(title=f"{m}{' (%)' if percent else ''}: mean ± std over seeds, best first",
                  title_justify="left")
    for col in result.grid:
        table.add_column(escape(col), min_width=len(col))
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
    out.print(f"wrote {escape(', '.join(_relative(p) for p in result.files))}")
