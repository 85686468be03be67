"""A sweep's trials: the grid of `-p` values times the seeds, each trial's `--set` options,
its key (the run directory's name), and every trial's spec validated before anything runs."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, replace

from netspec.errors import NetspecError, Problem, SpecError
from netspec.spec.yamlio import load_yaml


@dataclass(frozen=True)
class Trial:
    """One point of the grid with one seed: the `--set` options that make its spec."""

    index: int  # position in the sweep, from 0
    values: tuple[tuple[str, str], ...]  # (key path, value as YAML text), in grid order
    seed: int

    @property
    def key(self) -> str:
        """Short hash of the overrides and the seed: the run directory's name."""
        canon = {path: canonical(text) for path, text in self.values}
        blob = json.dumps({"overrides": canon, "seed": self.seed}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def options(self) -> list[str]:
        return [f"{path}={text}" for path, text in self.values] + [f"seed={self.seed}"]

    @property
    def label(self) -> str:
        return " ".join([f"{path}={text}" for path, text in self.values] + [f"seed={self.seed}"])


def canonical(text: str):
    """A value's YAML text as the value it denotes, so 0.01 and 1e-2 name the same trial."""
    try:
        return load_yaml(text, "-p").data
    except NetspecError:
        return text


def parse_params(items: list[str]) -> dict[str, list[str]]:
    """`-p key.path=v1,v2,...` options -> {key path: [value text, ...]}; commas inside
    brackets, braces or quotes belong to the value (`-p layers[0].kernel_size=[3,3],[5,5]`)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        path, sep, raw = item.partition("=")
        path = path.strip()
        values = _split_values(raw) if sep else []
        if not path or not values or any(not v for v in values):
            raise SpecError([Problem("expected key.path=value1,value2,... (values separated by "
                                     "commas), e.g. -p train.optimizer.lr=0.01,0.05", "",
                                     f"-p {item}")])
        if path == "seed":
            raise SpecError([Problem("give the seeds with --seeds 0,1,2", "", f"-p {item}")])
        if path in grid:
            raise SpecError([Problem(f"{path} is swept twice; give all its values in one -p",
                                     "", f"-p {item}")])
        seen: dict[str, str] = {}
        for value in values:  # 0.1 and 1e-1 are one value, and would be one trial
            same = json.dumps(canonical(value), sort_keys=True)
            if same in seen:
                same = seen[same]
                alike = f"'{same}' and '{value}' are" if same != value else f"'{value}' is"
                raise SpecError([Problem(f"{alike} the same value, given twice; give each "
                                         "value once", "", f"-p {item}")])
            seen[same] = value
        grid[path] = values
    return grid


def _split_values(text: str) -> list[str]:
    values, depth, quote, start = [], 0, None, 0
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def as_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


MAX_TRIALS = 10_000  # each trial is a whole training run with its own directory


def trials(grid: dict, seeds) -> list[Trial]:
    """The grid's points times the seeds, seeds innermost, in the grid's order; a SpecError
    when there are more than MAX_TRIALS (a typo such as one value too many per -p multiplies)."""
    paths = list(grid)
    columns = [[as_text(v) for v in grid[p]] for p in paths]
    sizes = [len(c) for c in columns] + [len(list(seeds))]
    if math.prod(sizes) > MAX_TRIALS:
        raise SpecError([Problem(
            f"the sweep has {' x '.join(map(str, sizes))} = {math.prod(sizes):,} trials "
            f"(values per -p, then seeds), more than {MAX_TRIALS:,}; each trial is a whole "
            "training run, so sweep fewer values, or split the sweep")])
    points = itertools.product(*columns)
    return [Trial(i, tuple(zip(paths, point)), seed)
            for i, (point, seed) in enumerate(itertools.product(points, seeds))]


def resolve(text: str, file: str, fixed: list[str], all_trials: list[Trial]) -> list:
    """Each trial's validated spec; every problem of every trial raised at once (each
    distinct problem once, naming the first trial that has it)."""
    from netspec.spec.model import loads

    specs, problems, seen = [], [], set()
    for trial in all_trials:
        try:
            specs.append(loads(text, file, list(fixed) + trial.options))
        except SpecError as e:
            for p in e.problems:
                if str(p) in seen:
                    continue
                seen.add(str(p))
                problems.append(_in_trial(p, trial, len(all_trials)))
    if problems:
        raise SpecError(problems)
    return specs


def _in_trial(p: Problem, trial: Trial, n: int) -> Problem:
    """The problem as the sweep's options give it: `-p path=value` or `--seeds`, trial named."""
    file = p.file
    for path, value in trial.values:
        if file == f"--set {path}={value}":
            file = f"-p {path}={value}"
    if file == f"--set seed={trial.seed}":
        file = f"--seeds {trial.seed}"
    where = f"trial {trial.index + 1} of {n}: {trial.label}"
    return replace(p, file=file, message=f"{p.message} (in {where})")
