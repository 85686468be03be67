"""CIFAR-10 and CIFAR-100 from their binary archives: found on disk or downloaded, checked by size
and SHA-256, and read record by record. No pickle is ever loaded (the "python version" of the
archives is pickles; netspec reads only the binary version).

A CIFAR dataset is found as, in each place netspec looks (--data-dir, $NETSPEC_DATA, each also
as a parent holding NAME/, then the user cache):
    the archive        cifar-10-binary.tar.gz: verified, then read straight from the archive
    its files          cifar-10-batches-bin/*.bin (an extracted archive), or the .bin files
                       themselves: each checked for its exact size
A directory given as `data.dataset` that holds CIFAR-format files (data_batch_N.bin and
test_batch.bin, or train.bin and test.bin) is read the same way, with any number of records.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from netspec.data.dataset import Dataset, Split
from netspec.data.download import FetchError, Progress, absent_dirs, open_url, remove_empty
from netspec.data.known import ARCHIVES, ENV_VAR, ArchiveInfo
from netspec.data.locate import cache_dir
from netspec.errors import DataError, Problem
from netspec.fsio import chmod_as_open

CHUNK = 1 << 20


def layout_of(directory: Path) -> ArchiveInfo | None:
    """The CIFAR layout a directory's files follow (by their names), or None."""
    for info in ARCHIVES.values():
        if all((directory / f).is_file() for f in (info.train[0], info.test[0])):
            return info
    return None


def load_cifar(info: ArchiveInfo, data_dir=None, download_missing: bool = True,
               progress: Progress | None = None, coarse: bool = False) -> Dataset:
    """Find (else download) and read a known CIFAR dataset; DataError says what and where."""
    tried = []
    for directory in _candidates(info, data_dir):
        for folder in (directory / info.folder, directory):
            if folder.is_dir() and all((folder / f).is_file() for f in info.files):
                return read_dir(folder, info, coarse, exact=True)
        archive = directory / info.archive
        if archive.is_file():
            return read_archive(archive, info, coarse)
        tried.append(directory)
    dest = Path(data_dir).expanduser() if data_dir is not None else cache_dir(info.name)
    if not download_missing:
        raise _not_found(info, tried, "downloading is disabled")
    try:
        archive = download_archive(info, dest, progress)
    except DataError as e:
        raise _not_found(info, tried, "; ".join(p.message for p in e.problems)) from None
    return read_archive(archive, info, coarse)


def _candidates(info: ArchiveInfo, data_dir) -> list[Path]:
    out = []
    for root in (data_dir, os.environ.get(ENV_VAR) or None):
        if root is not None:
            root = Path(os.path.abspath(Path(root).expanduser()))
            out += [root / info.name, root]
    out.append(cache_dir(info.name))
    return list(dict.fromkeys(out))


def _not_found(info: ArchiveInfo, tried: list[Path], why: str) -> DataError:
    return DataError([Problem(
        f"dataset '{info.name}' not found: no {info.archive}, {info.folder}/ or its .bin files "
        f"in {', '.join(map(str, tried))}; the download failed: {why}. Fix: put "
        f"{info.archive} ({info.size:,} bytes, from {info.urls[0]}) in one of those "
        f"directories, or pass the directory holding it with --data-dir (or ${ENV_VAR})")])


def read_dir(folder: Path, info: ArchiveInfo, coarse: bool = False,
             exact: bool = False) -> Dataset:
    """Read the .bin files of `info`'s layout in `folder`. With `exact`, each must hold the
    published number of records; else any whole number of them. Train files that are absent
    are skipped when not `exact` (data_batch_1.bin alone is a valid small dataset)."""
    blobs, problems = {}, []
    for name in info.files:
        path = folder / name
        if not path.is_file():
            if exact or name in (info.train[0], *info.test):
                problems.append(Problem(f"missing {name}", file=str(folder)))
            continue
        try:
            blobs[name] = path.read_bytes()
        except OSError as e:
            problems.append(Problem(f"cannot read: {e.strerror or e}", file=str(path)))
    if problems:
        raise DataError(problems)
    names = _names(folder, info, coarse, lambda n: (folder / n).read_text(encoding="utf-8")
                   if (folder / n).is_file() else None)
    return _dataset(info, blobs, folder, coarse, exact, names, lambda n: str(folder / n))


def read_archive(archive: Path, info: ArchiveInfo, coarse: bool = False) -> Dataset:
    """Read `info`'s files from the archive, checking its size and SHA-256 in the same pass."""
    wanted = {f"{info.folder}/{n}": n for n in (*info.files, info.names,
                                                 *([info.coarse_names] if info.coarse_names
                                                   else []))}
    blobs: dict[str, bytes] = {}
    redo = (f"; delete {archive.name} and run again to download it, or replace it with a good "
            f"copy of {info.urls[0]}")
    try:
        with open(archive, "rb") as raw:
            reader = _Hashing(raw)
            with tarfile.open(fileobj=reader, mode="r|gz") as tar:
                for member in tar:
                    name = wanted.get(member.name)
                    if name is None or not member.isfile():
                        continue
                    if member.size > info.size * 2:  # never read an absurd member
                        raise DataError([Problem(f"{member.name} claims {member.size:,} bytes"
                                                 + redo, file=str(archive))])
                    blobs[name] = tar.extractfile(member).read()
            reader.drain()
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError([Problem(f"not a readable {info.archive} ({e}): the file is damaged "
                                 "or was cut short" + redo, file=str(archive))]) from None
    except OSError as e:
        raise DataError([Problem(f"cannot read: {e.strerror or e}", file=str(archive))]) \
            from None
    if reader.size != info.size or reader.digest() != info.sha256:
        raise DataError([Problem(
            f"{reader.size:,} bytes with SHA-256 {reader.digest()}, expected {info.size:,} "
            f"bytes with SHA-256 {info.sha256}: this is not the published {info.archive}"
            + redo, file=str(archive))])
    text = {n: blobs.pop(n).decode("utf-8") for n in (info.names, info.coarse_names)
            if n in blobs}
    names = _names(archive, info, coarse, text.get)
    return _dataset(info, blobs, archive, coarse, True, names,
                    lambda n: f"{archive}:{info.folder}/{n}")


def _names(where: Path, info: ArchiveInfo, coarse: bool, read) -> tuple[str, ...] | None:
    """The class names from the dataset's names file (None when it has none)."""
    file = info.coarse_names if coarse else info.names
    try:
        text = read(file)
    except (OSError, UnicodeDecodeError) as e:
        raise DataError([Problem(f"cannot read {file}: {e}", file=str(where))]) from None
    if text is None:
        return None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    expected = info.coarse_classes if coarse else info.num_classes
    if len(names) != expected:
        raise DataError([Problem(f"{file} names {len(names)} classes, expected {expected}, one "
                                 "a line", file=str(where))])
    return names


def _dataset(info, blobs, path, coarse, exact, names, where) -> Dataset:
    """Decode the records of every file; check sizes and label ranges, all at once."""
    problems, parts = [], {}
    rb = info.record_bytes
    for name, blob in blobs.items():
        expected = info.records[name] * rb
        if (exact and len(blob) != expected) or len(blob) % rb or not blob:
            whole = f" ({len(blob) // rb:,} whole records and {len(blob) % rb} bytes more)"
            problems.append(Problem(
                f"holds {len(blob):,} bytes, expected "
                + (f"{expected:,} ({info.records[name]:,} records" if exact else
                   "a positive whole number of records (each")
                + f" of {rb:,} bytes: {info.label_bytes} label byte{'s' * (info.label_bytes > 1)}"
                f" and 3,072 pixel bytes){whole if len(blob) % rb else ''}: the file is cut "
                "short, padded, or not a CIFAR binary file", file=where(name)))
            continue
        records = np.frombuffer(blob, np.uint8).reshape(-1, rb)
        label = records[:, 0 if coarse or info.label_bytes == 1 else 1].astype(np.int64)
        classes = info.coarse_classes if coarse else info.num_classes
        bad = np.flatnonzero(label >= classes)
        if bad.size:
            problems.append(Problem(f"record {int(bad[0])} has label {int(label[bad[0]])} (and "
                                    f"{bad.size - 1} more out of range): {info.name} has "
                                    f"classes 0..{classes - 1}", file=where(name)))
            continue
        parts[name] = (records[:, info.label_bytes:].reshape(-1, 3, 32, 32), label)
    if problems:
        raise DataError(problems)

    def join(files):
        have = [parts[f] for f in files if f in parts]
        return Split(np.concatenate([x for x, _ in have]), np.concatenate([y for _, y in have]))

    classes = info.coarse_classes if coarse else info.num_classes
    return Dataset(name=info.name, train=join(info.train), test=join(info.test),
                   num_classes=classes, path=Path(path), kind="cifar", class_names=names)


class _Hashing:
    """A read-only file wrapper that hashes and counts every byte read through it."""

    def __init__(self, raw):
        self.raw, self.size, self.sha = raw, 0, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.size += len(data)
        self.sha.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return self.sha.hexdigest()


def download_archive(info: ArchiveInfo, dest: Path, progress: Progress | None = None,
                     timeout: float = 30) -> Path:
    """Download `info`'s archive into `dest`, streamed into a temporary file, checked for its
    exact size and SHA-256 as it arrives, and moved into place only when both match."""
    target = dest / info.archive
    created = absent_dirs(dest)  # removed again (if empty) when the download fails
    try:
        dest.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{info.archive}.", suffix=".part")
        chmod_as_open(fd, target)  # the umask's mode, not mkstemp's 0600
    except OSError as e:
        remove_empty(created)
        raise DataError([Problem(f"cannot write the download: {e.strerror or e}",
                                 file=str(dest))]) from None
    tmp = Path(tmp_name)
    failures = []
    done = False
    try:
        for url in info.urls:
            try:
                with os.fdopen(os.dup(fd), "wb") as out:
                    out.seek(0)
                    out.truncate()
                    _stream(url, out, info, progress, timeout)
                os.replace(tmp, target)
                done = True
                return target
            except FetchError as e:
                failures.append(f"{url}: {e}")
        raise DataError([Problem(f"could not download {info.archive}: " + "; ".join(failures),
                                 file=str(dest))])
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        if not done:
            remove_empty(created)


def _stream(url: str, out, info: ArchiveInfo, progress, timeout: float) -> None:
    sha, done = hashlib.sha256(), 0
    with open_url(url, timeout) as response:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (http.client.HTTPException, OSError) as e:
                raise FetchError(f"transfer failed after {done:,} bytes: {e!r}") from None
            if not chunk:
                break
            done += len(chunk)
            if done > info.size:
                raise FetchError(f"sent more than the {info.size:,} bytes of {info.archive}")
            sha.update(chunk)
            out.write(chunk)
            if progress is not None:
                progress(info.archive, done, info.size)
    if done != info.size or sha.hexdigest() != info.sha256:
        raise FetchError(f"got {done:,} bytes with SHA-256 {sha.hexdigest()}, expected "
                         f"{info.size:,} with {info.sha256}")
    out.flush()
    os.fsync(out.fileno())
