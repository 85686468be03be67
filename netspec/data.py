"""Datasets: find, download, verify, read and normalise MNIST-format (IDX) image data.

netspec trains on image-classification data stored as four IDX files, the format of MNIST:

    train-images-idx3-ubyte  uint8 (N, H, W)     train-labels-idx1-ubyte  uint8 (N,)
    t10k-images-idx3-ubyte   uint8 (M, H, W)     t10k-labels-idx1-ubyte   uint8 (M,)

each gzipped (`NAME.gz`) or not (`NAME`, also `train-images.idx3-ubyte` style). A dataset is
either a known name (`mnist`, `fashion-mnist`: see `KNOWN`), found on disk or downloaded and
checked against SHA-256 sums of the decompressed content, or a path to a directory holding the
four files (read as they are, no checksum).

Flow: `load_dataset` -> `find_data_dir` (else `download`) -> `read_idx` x4 -> `Dataset`, then
`prepare` turns a `Dataset` into float arrays (N, 1, H, W) for training.

Like all of netspec this module never prints: progress goes to an optional callback, and every
problem is a `DataError` that names the file or directory and says how to fix it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import math
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError, Problem, did_you_mean

__all__ = [
    "FILES",
    "KNOWN",
    "NORMALIZE",
    "Dataset",
    "DatasetInfo",
    "Prepared",
    "Split",
    "cache_dir",
    "candidate_dirs",
    "download",
    "find_data_dir",
    "load_dataset",
    "normalize_images",
    "prepare",
    "read_idx",
    "stats",
]

# The four files of a dataset, by base name, in this order: train images, train labels,
# test images, test labels. On disk each may be NAME.gz or NAME.
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = FILES

ENV_VAR = "NETSPEC_DATA"

# progress(file name, bytes done, bytes total or None when the server does not say)
Progress = Callable[[str, int, "int | None"], None]

_CHUNK = 1 << 20  # bytes per read when decompressing, hashing or downloading
_USER_AGENT = "netspec (Python urllib)"  # some mirrors refuse urllib's default agent

# IDX data type codes (third byte of the magic number); netspec reads only 0x08.
_IDX_TYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32",
              0x0E: "float64"}


@dataclass(frozen=True)
class DatasetInfo:
    """What netspec knows about a downloadable dataset. Tests may construct their own."""

    name: str
    # base file name -> SHA-256 (hex) of its DECOMPRESSED content; a missing entry or None
    # means that file is only checked for being well-formed IDX
    sha256: Mapping[str, str | None]
    mirrors: tuple[str, ...] = ()  # base URLs, tried in order; file URL = mirror + NAME.gz
    num_classes: int = 10
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (channels, height, width) of one sample
    system_dirs: tuple[str, ...] = ()  # directories an OS package installs the files into
    files: tuple[str, ...] = FILES


KNOWN: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        # LeCun, Cortes, Burges; CC BY-SA 3.0. Hashes of the decompressed files, so a mirror
        # that recompressed the gzip still verifies.
        sha256={
            TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        # Zalando Research; MIT. Hashes of the decompressed files of Debian's
        # dataset-fashion-mnist 0.0~git20200523.55506a9-1 (whose gzips are recompressed,
        # the content is upstream's).
        sha256={
            TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian: dataset-fashion-mnist
    ),
}


# --------------------------------------------------------------------------------------------
# Reading IDX files


def read_idx(path, *, ndim: int | None = None) -> np.ndarray:
    """The array stored in the IDX file `path` (gzipped or raw; detected from the content).

    Only unsigned-byte IDX (magic 0x00 0x00 0x08 NDIM) is accepted. The header's dimensions
    must match the payload exactly; `ndim`, when given, is the number of dimensions required.
    Returns a writable uint8 array of the declared shape. Raises DataError naming the file.
    """
    return _read_idx(Path(path), ndim=ndim)[0]


def _read_idx(path: Path, *, ndim: int | None = None) -> tuple[np.ndarray, str]:
    """(array, SHA-256 hex of the decompressed bytes) of the IDX file `path`."""

    def fail(message: str) -> DataError:
        return DataError([Problem(message, file=str(path))])

    redo = "; replace the file with a good copy (or delete it and let netspec download it)"
    try:
        with open(path, "rb") as raw:
            start = raw.read(4)
            raw.seek(0)
            compressed = start[:2] == b"\x1f\x8b"
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
            digest = hashlib.sha256()
            try:
                header = _read_exactly(stream, 4)
                magic_ok = len(header) == 4 and header[:2] == b"\0\0"
                if not magic_ok or header[2] not in _IDX_TYPES:
                    if not start:
                        raise fail("the file is empty (0 bytes): it was truncated" + redo)
                    shown = " ".join(f"{b:02x}" for b in header) or "nothing"
                    what = "not an IDX file"
                    if path.name.endswith(".gz") and not compressed:
                        what += " and not gzip-compressed although its name ends in .gz"
                    if header[:1] == b"<":
                        what += " (it looks like an HTML or XML page)"
                    raise fail(f"{what}: it starts with bytes {shown}, expected 00 00 08 NN "
                               f"(unsigned-byte IDX with NN dimensions){redo}")
                if header[2] != 0x08:
                    raise fail(f"IDX data type 0x{header[2]:02x} ({_IDX_TYPES[header[2]]}) is "
                               "not supported: netspec reads unsigned-byte (0x08) IDX files, "
                               "the format of MNIST")
                n_dims = header[3]
                if n_dims == 0:
                    raise fail("the IDX header declares 0 dimensions" + redo)
                if ndim is not None and n_dims != ndim:
                    raise fail(f"the IDX header declares {n_dims} dimension(s), expected "
                               f"{ndim} ({_ROLE_SHAPES.get(ndim, 'array')}): is this the "
                               "right file?")
                dims_bytes = _read_exactly(stream, 4 * n_dims)
                if len(dims_bytes) < 4 * n_dims:
                    raise fail(f"truncated header: it declares {n_dims} dimensions (needs "
                               f"{4 + 4 * n_dims} bytes) but the file ends after "
                               f"{4 + len(dims_bytes)} bytes{redo}")
                dims = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=">u4"))
                size = math.prod(dims)  # payload bytes the header promises
                digest.update(header)
                digest.update(dims_bytes)
                payload = bytearray()
                while len(payload) < size:
                    chunk = stream.read(min(_CHUNK, size - len(payload)))
                    if not chunk:
                        break
                    payload += chunk
                shape = "x".join(str(d) for d in dims)
                if len(payload) < size:
                    raise fail(f"truncated: the header declares {shape} = {size} bytes of data "
                               f"but only {len(payload)} follow{redo}")
                extra = 0
                while chunk := stream.read(_CHUNK):
                    extra += len(chunk)
                if extra:
                    raise fail(f"{extra} unexpected byte(s) after the {shape} = {size} bytes "
                               f"of data the header declares: the header is wrong{redo}")
                digest.update(payload)
            except (OSError, EOFError, zlib.error) as exc:
                raise fail(f"corrupt gzip data ({exc}): the file is damaged or was cut short "
                           f"while downloading{redo}") from None
    except FileNotFoundError:
        raise fail("file not found") from None
    except IsADirectoryError:
        raise fail("is a directory, expected an IDX file") from None
    except PermissionError:
        raise fail("permission denied: make the file readable") from None
    except OSError as exc:
        raise fail(f"cannot read the file: {exc.strerror or exc}") from None
    # uint8 (dims...), a view of the bytearray, so writable
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims), digest.hexdigest()


_ROLE_SHAPES = {1: "labels: (count,)", 3: "images: (count, height, width)"}


def _read_exactly(stream, n: int) -> bytes:
    """Up to `n` bytes; fewer only at the end of the stream."""
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


# --------------------------------------------------------------------------------------------
# Finding data on disk


def _info(dataset) -> DatasetInfo | None:
    """The DatasetInfo of a known name (or the DatasetInfo itself); None for a path dataset."""
    if isinstance(dataset, DatasetInfo):
        return dataset
    return KNOWN.get(str(dataset))


def _file_in(directory: Path, name: str) -> Path | None:
    """The file holding base name `name` in `directory` (NAME.gz, NAME, or dotted), or None."""
    dotted = name.replace("-idx", ".idx")  # train-images.idx3-ubyte, as some copies name it
    for candidate in (f"{name}.gz", name, f"{dotted}.gz", dotted):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _missing(directory: Path, files: Iterable[str]) -> list[str]:
    return [name for name in files if _file_in(directory, name) is None]


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
    info = _info(dataset)
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
    info = _info(dataset)
    files = info.files if info is not None else FILES
    for directory in candidate_dirs(dataset, data_dir):
        if directory.is_dir() and not _missing(directory, files):
            return directory
    return None


# --------------------------------------------------------------------------------------------
# Downloading


class _FetchError(Exception):
    """One URL failed; the next mirror may work."""


class _MirrorDown(_FetchError):
    """The mirror could not be reached at all; skip it for the remaining files."""


def download(dataset, dest, mirrors=None, progress: Progress | None = None,
             timeout: float = 30) -> Path:
    """Download the four files of `dataset` (a known name or a DatasetInfo) into `dest`.

    Each file is tried on every mirror in order (`mirrors` overrides the dataset's list) until
    one serves content whose decompressed SHA-256 matches. It is streamed into a temporary
    file in `dest` and moved into place with os.replace, so `dest` never holds a partial or
    unverified file. Files already in `dest` that verify are kept. A mirror that cannot be
    reached is skipped for the later files. `progress(file, bytes_done, bytes_total)` is
    called as bytes arrive (bytes_total is None when the server does not send a length).
    Returns `dest`; raises DataError listing each failed file and each mirror's reason.
    """
    info = _info(dataset)
    if info is None:
        raise DataError(f"cannot download '{dataset}': it is not a known dataset"
                        f"{did_you_mean(dataset, KNOWN)}; known: {', '.join(KNOWN)}")
    mirrors = tuple(info.mirrors if mirrors is None else mirrors)
    dest = Path(dest).expanduser()
    if not mirrors:
        raise DataError(f"no mirrors to download '{info.name}' from")
    created = not dest.exists()  # remove it again if the download fails completely
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError([Problem(f"cannot create the download directory: {exc.strerror or exc}"
                                 "; pass another one with --data-dir", file=str(dest))]) from None
    failures: list[Problem] = []
    down: dict[str, str] = {}  # mirror -> why it was unreachable
    for name in info.files:
        expected = info.sha256.get(name)
        if _verified(_file_in(dest, name), expected):
            continue
        target = dest / f"{name}.gz"
        tried = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{name}.gz"
            if mirror in down:
                tried.append(f"{url}: skipped, unreachable for an earlier file")
                continue
            try:
                _fetch(url, target, expected, progress, timeout)
                break
            except _MirrorDown as exc:
                down[mirror] = str(exc)
                tried.append(f"{url}: {exc}")
            except _FetchError as exc:
                tried.append(f"{url}: {exc}")
        else:
            failures.append(Problem(f"{name}.gz: every mirror failed:\n    " + "\n    ".join(tried),
                                    file=str(dest)))
    if failures:
        done = [n for n in info.files if _file_in(dest, n) is not None]
        head = (f"could not download '{info.name}' into {dest} "
                f"({len(failures)} of {len(info.files)} files failed"
                + (f"; {', '.join(done)} are in place" if done else "") + ")")
        if created and not done:
            with contextlib.suppress(OSError):
                dest.rmdir()  # only succeeds if empty
        tail = (f"fix: check the network, or download the files yourself, put them in one "
                f"directory and pass it with --data-dir or ${ENV_VAR}")
        raise DataError([Problem(head), *failures, Problem(tail)])
    return dest


def _verified(path: Path | None, expected: str | None) -> bool:
    """Whether `path` exists, is valid IDX, and matches `expected` (when given)."""
    if path is None:
        return False
    try:
        _, digest = _read_idx(path)
    except DataError:
        return False
    return expected is None or digest == expected


def _fetch(url: str, target: Path, expected: str | None, progress: Progress | None,
           timeout: float) -> None:
    """Download `url` into `target` atomically, verifying it; _FetchError if it fails."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".part")
    except OSError as exc:
        raise DataError([Problem(f"cannot write in the download directory: "
                                 f"{exc.strerror or exc}", file=str(target.parent))]) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            response = _open(url, timeout)
            with response:
                length = response.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() else None
                done = 0
                if progress is not None:
                    progress(target.name, 0, total)
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except TimeoutError:
                        raise _MirrorDown(f"timed out after {timeout:g} s mid-transfer") from None
                    except (http.client.HTTPException, OSError) as exc:
                        raise _FetchError(f"transfer failed after {done} bytes: "
                                          f"{exc!r}") from None
                    if not chunk:
                        break
                    out.write(chunk)  # an OSError here (disk full) is not the mirror's fault
                    done += len(chunk)
                    if progress is not None:
                        progress(target.name, done, total)
        if total is not None and done != total:
            raise _FetchError(f"transfer cut short: got {done} of {total} bytes")
        try:
            _, digest = _read_idx(tmp)
        except DataError as exc:
            raise _FetchError("served a file that is not valid IDX data: "
                              + exc.problems[0].message.split(";")[0]) from None
        if expected is not None and digest != expected:
            raise _FetchError(f"checksum mismatch: SHA-256 of the decompressed content is "
                              f"{digest}, expected {expected}")
        os.replace(tmp, target)
    except OSError as exc:
        raise DataError([Problem(f"cannot write the download: {exc.strerror or exc}",
                                 file=str(target))]) from None
    finally:
        tmp.unlink(missing_ok=True)  # after os.replace there is nothing left to remove


def _open(url: str, timeout: float):
    """The HTTP response for `url`; _FetchError/_MirrorDown saying why it failed."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _FetchError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise _MirrorDown(f"timed out after {timeout:g} s") from None
        raise _MirrorDown(f"cannot connect: {getattr(reason, 'strerror', None) or reason}") \
            from None
    except TimeoutError:
        raise _MirrorDown(f"timed out after {timeout:g} s") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        raise _FetchError(f"request failed: {exc!r}") from None


# --------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True, eq=False)
class Split:
    """One part of a dataset: images uint8 (N, H, W) and labels int64 (N,)."""

    images: np.ndarray  # uint8 (N, H, W)
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: its train and test splits and the number of classes."""

    name: str
    train: Split
    test: Split
    num_classes: int  # 10 for the known datasets; max label + 1 for a directory
    path: Path | None = field(default=None)  # the directory it was read from

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one sample as `prepare` returns it: (1, H, W)."""
        return (1, *self.train.images.shape[1:])


def load_dataset(dataset="mnist", data_dir=None, download_missing: bool = True,
                 progress: Progress | None = None) -> Dataset:
    """Locate (else download) and read a dataset, checking it thoroughly.

    `dataset` is a known name (`mnist`, `fashion-mnist`), a DatasetInfo, or a path to a
    directory holding the four IDX files. A known dataset is looked for by `find_data_dir`;
    if absent and `download_missing`, it is downloaded into `data_dir` (when given) or the
    user cache. Known datasets are verified against their SHA-256 sums even when read from
    disk. `progress` is passed to `download`. Raises DataError saying what is missing or wrong,
    where netspec looked, and how to fix it.
    """
    info = _info(dataset)
    if info is None:
        directory = candidate_dirs(dataset)[0]
        if not directory.is_dir():
            known = ", ".join(KNOWN)
            raise DataError([Problem(
                f"unknown dataset '{dataset}'{did_you_mean(dataset, KNOWN)}: it is neither a "
                f"known dataset ({known}) nor a directory (looked for {directory}). Use a known "
                f"name or the path of a directory holding {', '.join(FILES)} (each .gz or not)",
                path="dataset")])
        missing = _missing(directory, FILES)
        if missing:
            raise DataError([Problem(
                f"missing {', '.join(m + '(.gz)' for m in missing)}: a dataset directory must "
                f"hold all of {', '.join(FILES)} (each gzipped or not)", file=str(directory))])
        return _load_dir(directory, str(dataset), None)

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
    return _load_dir(directory, info.name, info)


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
        if not directory.exists():
            status = "does not exist"
        elif not directory.is_dir():
            status = "is not a directory"
        else:
            missing = _missing(directory, info.files)
            status = "missing " + ", ".join(missing)
        problems.append(Problem(status, file=str(directory)))
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
    paths = {n: _file_in(directory, n) for n in files}
    arrays: dict[str, np.ndarray] = {}
    problems: list[Problem] = []
    for (n, path), ndim in zip(paths.items(), (3, 1, 3, 1)):
        try:
            arrays[n], digest = _read_idx(path, ndim=ndim)
        except DataError as exc:
            problems += exc.problems
            continue
        expected = info.sha256.get(n) if info is not None else None
        if expected is not None and digest != expected:
            problems.append(Problem(_checksum_message(n, info.name, digest, expected),
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


def _checksum_message(name: str, dataset: str, actual: str, expected: str) -> str:
    other = [k for k, v in KNOWN.items() if v.name != dataset and v.sha256.get(name) == actual]
    hint = f" (it is {other[0]}'s {name})" if other else ""
    return (f"checksum mismatch for {dataset}: SHA-256 of the decompressed content is {actual}, "
            f"expected {expected}{hint}. The file is corrupt or from another dataset: delete "
            "it and run again to download it, or replace it with a good copy")


# --------------------------------------------------------------------------------------------
# Preparing arrays for training

NORMALIZE = ("standardize", "scale", "none")


class Prepared(dict):
    """{"train": (x, y), ["val": (x, y),] "test": (x, y)} plus how x was normalised.

    x is float (N, 1, H, W), y int64 (N,). `normalize` is the mode; for "standardize"
    x = (pixels/255 - mean) / std with the float `mean` and `std` of the training split; for
    "scale" mean = 0.0 and std = 1.0; for "none" both are None (x = raw pixels). Pass them to
    `normalize_images` to treat new images the same way.
    """

    def __init__(self, splits, normalize: str, mean: float | None, std: float | None):
        super().__init__(splits)
        self.normalize = normalize
        self.mean = mean
        self.std = std


def stats(images: np.ndarray) -> tuple[float, float]:
    """(mean, std) over all pixels of `images` / 255, computed in float64 (exactly for uint8)."""
    images = np.asarray(images)
    n = images.size
    if n == 0:
        raise DataError("cannot compute the mean and std of an empty set of images")
    if images.dtype != np.uint8:
        x = images.astype(np.float64) / 255.0
        return float(x.mean()), float(x.std())
    # exact integer sums of pixels and squared pixels (Python ints, no rounding)
    total = int(images.sum(dtype=np.uint64))
    total_sq = int(np.square(images, dtype=np.uint16).sum(dtype=np.uint64))
    mean = total / (255 * n)
    std = math.sqrt(n * total_sq - total * total) / (255 * n)
    return mean, std


def _check_normalize(normalize) -> None:
    if normalize not in NORMALIZE:
        raise DataError([Problem(f"unknown normalize '{normalize}'"
                                 f"{did_you_mean(normalize, NORMALIZE)}; use one of "
                                 f"{', '.join(NORMALIZE)}", path="normalize")])


def _float_dtype(dtype) -> np.dtype:
    try:
        out = np.dtype(dtype)
    except TypeError:
        out = None
    if out is None or out.kind != "f":
        raise DataError([Problem(f"dtype '{dtype}' is not a floating-point type; use float32 "
                                 "or float64", path="dtype")])
    return out


def normalize_images(images: np.ndarray, normalize: str = "standardize",
                     mean: float | None = None, std: float | None = None,
                     dtype="float32") -> np.ndarray:
    """Images (N, H, W) or (N, 1, H, W), pixels 0..255 -> float (N, 1, H, W) in `dtype`.

    "standardize" needs `mean` and `std` (in units of pixels/255, see `stats`); "scale" maps
    to [0, 1]; "none" keeps 0..255.
    """
    dtype = _float_dtype(dtype)
    _check_normalize(normalize)
    if normalize == "standardize":
        if mean is None or std is None:
            raise DataError("normalize 'standardize' needs the training mean and std")
        if not std > 0:
            raise DataError(f"cannot standardize: the training pixels' std is {std} (all "
                            "pixels are equal); use normalize: scale")
    else:
        mean, std = 0.0, 1.0
    scale = 1.0 if normalize == "none" else 255.0
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise DataError(f"images must be (N, H, W) or (N, 1, H, W), got shape {images.shape}")
    # x = pixels * a - b with a = 1/(scale*std), b = mean/std, in `dtype`
    x = images.astype(dtype)
    a, b = 1.0 / (scale * std), mean / std
    if a != 1.0:
        x *= dtype.type(a)
    if b != 0.0:
        x -= dtype.type(b)
    return x.reshape(len(x), 1, *x.shape[1:])  # (N, 1, H, W)


def _validation_count(validation, n: int) -> int:
    """How many of the `n` training samples `validation` asks for.

    A fraction in (0, 1) means round(n * fraction) samples; an int, or a whole float >= 1
    (as a spec's number may arrive), is a count.
    """
    fix = (f"use a fraction in (0, 1) such as 0.1, or a whole number of samples from 1 to "
           f"{n - 1} (0 = no validation split)")
    if isinstance(validation, bool) or not isinstance(validation, (int, float, np.number)):
        raise DataError([Problem(f"{validation!r} is not a number; {fix}", path="validation")])
    if isinstance(validation, (int, np.integer)):
        k = int(validation)
        if not 0 <= k < n:
            raise DataError([Problem(f"{k} samples is out of range for a training set of {n}; "
                                     f"{fix}", path="validation")])
        return k
    frac = float(validation)
    if frac == 0:
        return 0
    if frac >= 1 and frac.is_integer():  # a count that went through a float (YAML, pydantic)
        return _validation_count(int(frac), n)
    if not 0 < frac < 1:
        raise DataError([Problem(f"{validation} is out of range; {fix}", path="validation")])
    k = round(n * frac)
    if not 0 < k < n:
        raise DataError([Problem(f"fraction {frac} of {n} training samples gives {k} "
                                 f"validation samples; {fix}", path="validation")])
    return k


def prepare(ds: Dataset, normalize: str = "standardize", validation: float = 0,
            dtype="float32") -> Prepared:
    """Float arrays for training: {"train": (x, y), ["val": (x, y),] "test": (x, y)}.

    x is `dtype` (N, 1, H, W), y int64 (N,). `validation` (a fraction in (0, 1), or a count
    as an int or whole float) moves the LAST k training samples into "val", deterministically
    (no RNG). `normalize` is
    "standardize" ((x/255 - mean)/std, scalar mean and std over all pixels of the training
    split after the validation split is taken out), "scale" (x/255) or "none" (0..255).
    The returned dict also carries `.normalize`, `.mean` and `.std`.
    """
    n = len(ds.train)
    k = _validation_count(validation, n)
    _check_normalize(normalize)
    parts = {"train": (ds.train.images[: n - k], ds.train.labels[: n - k])}
    if k:
        parts["val"] = (ds.train.images[n - k :], ds.train.labels[n - k :])
    parts["test"] = (ds.test.images, ds.test.labels)
    mean = std = None
    if normalize == "standardize":
        mean, std = stats(parts["train"][0])
    elif normalize == "scale":
        mean, std = 0.0, 1.0
    out = {
        key: (normalize_images(x, normalize, mean, std, dtype), np.asarray(y, dtype=np.int64))
        for key, (x, y) in parts.items()
    }
    return Prepared(out, normalize, mean, std)
