"""Sweeps: one spec trained over a grid of overrides times seeds, the trials run by Dask.

`netspec.sweep.run` is the entry point (netspec/sweep/runner.py); the grid is in grid.py, a
trial's run in trial.py, the summary files and plot in results.py.
"""

from netspec.sweep.runner import SweepError, SweepResult, run

__all__ = ["SweepError", "SweepResult", "run"]
