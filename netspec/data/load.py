"""Loading a dataset: tell its kind, locate it (else download it), read and check it.

IDX directories are read here (four files, checked together); the other kinds by their
modules: cifar.py, folder.py (images), arrays.py (.npz), tables.py (.csv).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from netspec.data.arrays import load_npz
from netspec.data.cifar import layout_of, load_cifar, read_archive, read_dir
from netspec.data.dataset import Dataset, Split
from netspec.data.download import Progress, download
from netspec.data.folder import is_image_folder, load_folder
from netspec.data.idx import read_idx_digest
from netspec.data.known import ARCHIVES, ENV_VAR, FILES, KNOWN, NAMES, DatasetInfo, dataset_info
from netspec.data.locate import (
    cache_dir,
    candidate_dirs,
    describe,
    file_in,
    find_data_dir,
    missing_files,
)
from netspec.data.options import LoadOptions
from netspec.data.tables import load_table
from netspec.errors import DataError, Problem, did_you_mean


def load_dataset(dataset="mnist", data_dir=None, download_missing: bool = True,
                 progress: Progress | None = None, options: LoadOptions | None = None,
                 check_shape=None) -> Dataset:
    """Locate (else download) and read a dataset, checking it thoroughly.

    `dataset` is a known name (`mnist`, `fashion-mnist`, `cifar10`, `cifar100`), a
    DatasetInfo, or a path whose kind is told by what it is: a directory of IDX files, of
    CIFAR-format .bin files, of images (see folder.py) or holding train.csv and test.csv; a
    .npz or a .csv file. A known dataset is looked for by `find_data_dir`; if absent and
    `download_missing`, it is downloaded into `data_dir` (when given) or the user cache, and
    verified against its checksums even when read from disk. A `data_dir` that holds IDX files
    other than the published ones is read as a directory of IDX files (Dataset.notes says so).

    `options` (LoadOptions) carries the spec's data settings; `check_shape(sample shape, kind)`
    is called as soon as the shape of a sample is known (for images: before any is decoded).
    `progress(name, done, total)` reports downloads and decoding. Raises DataError saying what
    is missing or wrong, where netspec looked, and how to fix it.
    """
    options = options or LoadOptions()
    if isinstance(dataset, str) and dataset in ARCHIVES:
        ds = load_cifar(ARCHIVES[dataset], data_dir, download_missing, progress, options.coarse)
    elif dataset_info(dataset) is not None:
        ds = _load_known(dataset_info(dataset), data_dir, download_missing, progress)
    else:
        ds = _load_path(candidate_dirs(dataset)[0], str(dataset), options, progress,
                        check_shape)
    if check_shape is not None and ds.kind != "images":
        check_shape(ds.input_shape, ds.kind)
    return ds


def _load_path(path: Path, name: str, options: LoadOptions, progress, check_shape) -> Dataset:
    """A dataset given by its path: the kind is told by what the path is."""
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix == ".npz":
            return load_npz(path, options)
        if suffix in (".csv", ".txt"):
            return load_table(path, options)
        archive = next((a for a in ARCHIVES.values() if a.archive == path.name), None)
        if archive is not None:
            return read_archive(path, archive, options.coarse)
        raise DataError([Problem(
            f"cannot tell what kind of dataset a '{suffix or path.name}' file is: give a .npz "
            "or .csv file, or a directory (of IDX files, CIFAR .bin files, or images in one "
            "folder per class)", file=str(path))])
    if not path.is_dir():
        raise DataError([Problem(
            f"unknown dataset '{name}'{did_you_mean(name, NAMES)}: it is neither a known "
            f"dataset ({', '.join(NAMES)}) nor a file or directory (looked for {path}). Use a "
            "known name, or the path of a directory (IDX files, images in one folder per "
            "class) or of a .npz or .csv file", path="dataset")])
    if not missing_files(path, FILES):
        return _load_dir(path, name, None)
    layout = layout_of(path)
    if layout is not None:
        return read_dir(path, layout, options.coarse)
    if (path / "train.csv").is_file() and (path / "test.csv").is_file():
        return load_table(path, options)
    if is_image_folder(path):
        return load_folder(path, options, progress, check_shape)
    some = [m for m in FILES if file_in(path, m) is not None]
    if some:
        missing = missing_files(path, FILES)
        raise DataError([Problem(
            f"missing {', '.join(m + '(.gz)' for m in missing)}: a dataset directory must "
            f"hold all of {', '.join(FILES)} (each gzipped or not)", file=str(path))])
    raise DataError([Problem(
        "not a dataset directory: it holds no IDX files, no CIFAR .bin files, no train.csv "
        "and test.csv, and no class folders of images", file=str(path))])


def _load_known(info: DatasetInfo, data_dir, download_missing, progress) -> Dataset:
    directory = find_data_dir(info, data_dir)
    download_error: DataError | None = None
    if directory is None and download_missing:
        dest = Path(data_dir).expanduser() if data_dir is not None else cache_dir(info.name)
        try:
            directory = download(info, dest, progress=progress)
        except DataError as exc:
            download_error = exc
    if directory is None:
        raise _not_found(info, data_dir, download_missing, download_error)
    try:
        return _load_dir(directory, info.name, info)
    except DataError as e:
        # --data-dir names a directory of other IDX files (not one of them is the published
        # file; a corrupt copy has some that are): the user's choice, read as they are
        given = data_dir is not None and directory in candidate_dirs(info, data_dir)[:2]
        mismatches = [p for p in e.problems if p.message.startswith(CHECKSUM)]
        checked = [n for n in info.files if info.sha256.get(n)]
        if not given or len(mismatches) != len(e.problems) or len(mismatches) < len(checked):
            raise
    ds = _load_dir(directory, str(directory), None)
    note = (f"{directory} does not hold the published {info.name} files (their checksums "
            "differ): read as a directory of IDX files")
    return replace(ds, notes=(note,))


def _not_found(info: DatasetInfo, data_dir, download_missing: bool,
               download_error: DataError | None) -> DataError:
    """The error for a known dataset that is nowhere on disk: what, where looked, what to do."""
    problems = [Problem(f"dataset '{info.name}' not found: no directory holds all of "
                        f"{', '.join(info.files)} (each .gz or not). Looked in:")]
    if data_dir is None:
        problems.append(Problem("--data-dir / data_dir: not given"))
    if not os.environ.get(ENV_VAR):
        problems.append(Problem(f"${ENV_VAR}: not set"))
    for directory in candidate_dirs(info, data_dir):
        problems.append(Problem(describe(directory, info), file=str(directory)))
    if download_error is not None:
        problems += download_error.problems[:-1]  # without its "fix:" line, given below
    elif not download_missing:
        problems.append(Problem("downloading is disabled"))
    cache = cache_dir(info.name)
    problems.append(Problem(
        "fix: " + ("check the network, or " if download_error is not None else "")
        + f"put the four files in one directory and pass it with --data-dir DIR or set "
        f"{ENV_VAR}=DIR (DIR may also be a parent holding {info.name}/), or put them in {cache}"
        + ("" if download_missing else ", or allow downloading")))
    return DataError(problems)


def _load_dir(directory: Path, name: str, info: DatasetInfo | None) -> Dataset:
    """Read and check the four files in `directory` (verifying checksums when `info` has them)."""
    files = info.files if info is not None else FILES
    paths = {n: file_in(directory, n) for n in files}
    arrays: dict[str, np.ndarray] = {}
    problems: list[Problem] = []
    for (n, path), ndim in zip(paths.items(), (3, 1, 3, 1)):
        try:
            arrays[n], digest = read_idx_digest(path, ndim=ndim)
        except DataError as exc:
            problems += exc.problems
            continue
        expected = info.sha256.get(n) if info is not None else None
        if expected is not None and digest != expected:
            problems.append(Problem(_checksum_message(n, info.name, digest, expected, path),
                                    file=str(path)))
    if problems:
        raise DataError(problems)

    train_x, train_y, test_x, test_y = (arrays[n] for n in files)
    problems = []
    for (images_file, images), (labels_file, labels) in (
        ((paths[files[0]], train_x), (paths[files[1]], train_y)),
        ((paths[files[2]], test_x), (paths[files[3]], test_y)),
    ):
        if len(images) != len(labels):
            problems.append(Problem(
                f"holds {len(labels)} labels but {images_file.name} holds {len(images)} "
                "images: the two files of a split must have one label per image",
                file=str(labels_file)))
    if train_x.shape[1:] != test_x.shape[1:]:
        problems.append(Problem(
            f"images are {test_x.shape[1]}x{test_x.shape[2]} but the training images are "
            f"{train_x.shape[1]}x{train_x.shape[2]}: both splits must have the same image size",
            file=str(paths[files[2]])))
    if info is not None and train_x.shape[1:] != tuple(info.image_shape[1:]):
        h, w = info.image_shape[1:]
        problems.append(Problem(f"images are {train_x.shape[1]}x{train_x.shape[2]}, expected "
                                f"{h}x{w} for {info.name}", file=str(paths[files[0]])))
    if len(train_x) == 0:
        problems.append(Problem("the training split is empty", file=str(paths[files[0]])))
    if problems:
        raise DataError(problems)

    # labels: uint8 -> int64 (N,); the range check needs the class count
    if info is not None:
        num_classes = info.num_classes
        for labels_file, labels in ((paths[files[1]], train_y), (paths[files[3]], test_y)):
            bad = np.flatnonzero(labels >= num_classes)
            if bad.size:
                problems.append(Problem(
                    f"label {int(labels[bad[0]])} at index {int(bad[0])} (and {bad.size - 1} "
                    f"more) is out of range: {info.name} has classes 0..{num_classes - 1}",
                    file=str(labels_file)))
        if problems:
            raise DataError(problems)
    else:
        num_classes = int(max(train_y.max(), test_y.max() if len(test_y) else 0)) + 1
    return Dataset(
        name=name,
        train=Split(train_x, train_y.astype(np.int64)),
        test=Split(test_x, test_y.astype(np.int64)),
        num_classes=num_classes,
        path=directory,
    )


CHECKSUM = "checksum mismatch"  # how a checksum problem's message starts


def _checksum_message(name: str, dataset: str, actual: str, expected: str, path: Path) -> str:
    """Never advise deleting a file netspec did not download: it may be another dataset's."""
    other = [k for k, v in KNOWN.items() if v.name != dataset and v.sha256.get(name) == actual]
    head = (f"checksum mismatch for {dataset}: SHA-256 of the decompressed content is {actual}, "
            f"expected {expected}")
    if other:
        return (f"{head}: it is {other[0]}'s {name}, not {dataset}'s. Put {dataset}'s files in "
                f"a directory of their own and give that (--data-dir), or train on "
                f"{other[0]} (data.dataset: {other[0]})")
    if path.parent == cache_dir(dataset):  # netspec downloaded it: damaged in its own cache
        return (f"{head}. netspec downloaded it into its cache and it is damaged since: "
                "remove it and run again to download it")
    return (f"{head}: it is not {dataset}'s file. If the directory holds a dataset of your own "
            f"in IDX files, give it as data.dataset: {path.parent} (read as it is, without "
            f"checksums); if it should be {dataset}'s, replace it with a good copy")

