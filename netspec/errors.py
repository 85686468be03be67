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
    file: str | None = None  # the spec file, or the `--set key=value` option that gave the value
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


class OutputError(NetspecError):
    """A file or directory cannot be written (bad path, full disk, no permission), or writing
    it would overwrite a file netspec did not write."""


class TrainingError(NetspecError):
    """Training cannot go on (for example the loss became NaN)."""


class ExportError(NetspecError):
    """A network cannot be exported (to ONNX), or the exported file cannot be written."""


class ModelError(NetspecError):
    """An ONNX model cannot be imported: unreadable, unsafe, malformed, or using operations
    netspec has no layer for (each problem names the node)."""


# Names other frameworks use for things netspec has, compared after _squash().
ALIASES = {
    "dense": "linear", "fc": "linear", "fullyconnected": "linear", "innerproduct": "linear",
    "conv": "conv2d", "convolution": "conv2d", "maxpool": "maxpool2d", "avgpool": "avgpool2d",
    "averagepool": "avgpool2d", "averagepool2d": "avgpool2d", "pool": "maxpool2d",
    "reshape": "flatten", "view": "flatten", "crossentropyloss": "cross_entropy",
    "softmaxcrossentropy": "cross_entropy", "ce": "cross_entropy",
    "mseloss": "mse", "l2": "mse", "henormal": "kaiming_normal", "heuniform": "kaiming_uniform",
    "glorotnormal": "xavier_normal", "glorotuniform": "xavier_uniform", "zero": "zeros",
    "steplr": "step", "multisteplr": "multistep", "cosineannealing": "cosine",
    "cosineannealinglr": "cosine", "exponentiallr": "exponential", "standardise": "standardize",
    "kernel": "kernel_size", "filters": "out_channels", "channels": "out_channels",
    "units": "out_features", "outputs": "out_features", "numoutput": "out_features",
    "learningrate": "lr", "decay": "weight_decay", "epoch": "epochs", "batch": "batch_size",
}


def _squash(word: str) -> str:
    """Case-, dash- and underscore-insensitive form: 'Kernel-Size' -> 'kernelsize'."""
    return "".join(c for c in str(word).lower() if c not in "_- ")


def suggestions(word, choices, n: int = 3) -> list[str]:
    """The choices closest to `word`, best first: same spelling up to case and '_', a known
    alias from another framework, then difflib's ranking."""
    choices = [str(c) for c in choices]
    squashed = {_squash(c): c for c in choices}
    key = _squash(word)
    ranked = []
    for hit in (squashed.get(key), squashed.get(_squash(ALIASES.get(key, "")))):
        if hit and hit not in ranked and hit != str(word):
            ranked.append(hit)
    close = difflib.get_close_matches(key, list(squashed), n=n, cutoff=0.6)
    ranked += [squashed[c] for c in close if squashed[c] not in ranked and squashed[c] != word]
    return ranked[:n]


def did_you_mean(word, choices) -> str:
    """' (did you mean 'x'?)' for the closest choices, or '' when nothing is close."""
    close = suggestions(word, choices)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
