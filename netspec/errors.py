"""The one exception family netspec raises for bad input, and how each error is located.

Every user-facing error is a `NetspecError`. The CLI turns it into lines of the form
`FILE:LINE:COL: key.path: message` and exit code 1; a traceback for bad input is a bug.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where it is, what is wrong, how to fix it."""

    message: str
    path: str = ""  # key path, e.g. "layers[3] (linear).out_features"
    file: str | None = None
    line: int | None = None  # 1-based
    col: int | None = None  # 1-based

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.col is not None:
                    where += f":{self.col}"
            where += ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        return f"{where}{self.path + ': ' if self.path else ''}{self.message}"


class NetspecError(Exception):
    """Base class of every error caused by the user's input (spec, data, checkpoint)."""

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SpecError(NetspecError):
    """The spec file is malformed, invalid or describes an impossible network."""


class DataError(NetspecError):
    """A dataset is missing, corrupt or does not fit the spec."""


class CheckpointError(NetspecError):
    """A checkpoint is missing, corrupt, or belongs to a different spec."""


class TrainingError(NetspecError):
    """Training cannot go on (for example the loss became NaN)."""


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
