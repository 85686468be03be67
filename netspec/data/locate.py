"""Finding a dataset on disk: --data-dir, $NETSPEC_DATA, the user cache, OS package directories.

A directory that holds another known dataset's files (MNIST's, for a Fashion-MNIST spec) is not
the dataset looked for: it is skipped for the next place, and named for what it holds."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from netspec.data import known
from netspec.data.idx import check_idx_file
from netspec.data.known import ENV_VAR, FILES, dataset_info


def file_in(directory: Path, name: str) -> Path | None:
    """The file holding base name `name` in `directory` (NAME.gz, NAME, or dotted), or None."""
    dotted = name.replace("-idx", ".idx")  # train-images.idx3-ubyte, as some copies name it
    for candidate in (f"{name}.gz", name, f"{dotted}.gz", dotted):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def missing_files(directory: Path, files: Iterable[str]) -> list[str]:
    return [name for name in files if file_in(directory, name) is None]


def cache_dir(dataset: str) -> Path:
    """Where netspec keeps a downloaded dataset: $XDG_CACHE_HOME (or ~/.cache)/netspec/NAME."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "netspec" / dataset


def candidate_dirs(dataset, data_dir=None) -> list[Path]:
    """Every directory `find_data_dir` looks in, in order (duplicates removed).

    For a known dataset: `data_dir`, then $NETSPEC_DATA, each as the directory itself and
    as a parent holding NAME/ (NAME/ first), then the user cache, then OS package
    directories. For any other `dataset`: that path (relative to the working directory).
    """
    info = dataset_info(dataset)
    if info is None:
        return [Path(os.path.abspath(Path(str(dataset)).expanduser()))]
    out: list[Path] = []
    for root in (data_dir, os.environ.get(ENV_VAR) or None):
        if root is not None:
            root = Path(os.path.abspath(Path(root).expanduser()))
            out += [root / info.name, root]
    out.append(cache_dir(info.name))
    out += [Path(d) for d in info.system_dirs]
    return list(dict.fromkeys(out))


def find_data_dir(dataset, data_dir=None) -> Path | None:
    """The first directory of `candidate_dirs` that holds all four files, or None.

    `dataset` is a known name (see `KNOWN`), a DatasetInfo, or a path to a directory.
    """
    info = dataset_info(dataset)
    files = info.files if info is not None else FILES
    for directory in candidate_dirs(dataset, data_dir):
        if directory.is_dir() and not missing_files(directory, files) and (
                info is None or other_dataset(directory, info) is None):
            return directory
    return None


def other_dataset(directory: Path, info) -> str | None:
    """The name of another known dataset whose files `directory` holds instead of `info`'s,
    judged by the checksum of its test labels (a small file), else None."""
    name = info.files[3]
    path = file_in(directory, name)
    if path is None or info.sha256.get(name) is None:
        return None
    try:
        digest = check_idx_file(path, info.max_content_bytes)
    except (OSError, ValueError):
        return None
    if digest == info.sha256.get(name):
        return None
    return next((o.name for o in known.KNOWN.values()
                 if o.name != info.name and o.sha256.get(name) == digest), None)


def describe(directory: Path, info) -> str:
    """What `directory` holds, for the message of a dataset not found there."""
    if not directory.exists():
        return "does not exist"
    if not directory.is_dir():
        return "is not a directory"
    missing = missing_files(directory, info.files)
    if missing:
        return "missing " + ", ".join(missing)
    other = other_dataset(directory, info)
    if other is not None:
        return (f"holds {other}'s files, not {info.name}'s (to train on them, set "
                f"data.dataset: {other})")
    return "holds all the files"

