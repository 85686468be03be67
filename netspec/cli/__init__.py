"""The `netspec` command line: thin commands over library calls. The only package that prints.

Exit codes: 0 ok, 1 the spec, data or checkpoint is wrong (or a check failed), 2 usage error,
130 interrupted (SIGINT, Ctrl-C), 143 terminated (SIGTERM, as sent by Slurm, Kubernetes, Dask).
Errors caused by input are printed as `FILE:LINE:COL: key.path: message`, never as a traceback.

Layout: `app` holds the Typer object, `common` the consoles, error reporting and helpers that
several verbs share; each other module registers a group of verbs. Typer lists the commands in
the order they are registered, so the imports below keep that order.
"""

from netspec.cli.app import app

# isort: off
from netspec.cli import check, run, predict, sweep, bench, export, importer  # noqa: F401  (registers the verbs)
# isort: on

__all__ = ["app", "main"]


def main():
    app()

