"""Downloading a known dataset: mirror by mirror, streamed to a temp file, hashed and size-capped
while it streams, moved into place only once verified."""

from __future__ import annotations

import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from netspec.data.idx import CHUNK, IdxCheck, check_idx_file
from netspec.data.known import ENV_VAR, KNOWN, DatasetInfo, dataset_info
from netspec.data.locate import file_in, other_dataset
from netspec.errors import DataError, Problem, did_you_mean
from netspec.fsio import chmod_as_open

# progress(file name, bytes done, bytes total or None when the server does not say)
Progress = Callable[[str, int, "int | None"], None]
_USER_AGENT = "netspec (Python urllib)"  # some mirrors refuse urllib's default agent


class FetchError(Exception):
    """One URL failed; the next mirror may work."""


class MirrorDown(FetchError):
    """The mirror could not be reached at all; skip it for the remaining files."""


def download(dataset, dest, mirrors=None, progress: Progress | None = None,
             timeout: float = 30) -> Path:
    """Download the four files of `dataset` (a known name or a DatasetInfo) into `dest`.

    Each file is tried on every mirror in order (`mirrors` overrides the dataset's list) until
    one serves content whose decompressed SHA-256 matches. It is streamed into a temporary
    file in `dest` and moved into place with os.replace, so `dest` never holds a partial or
    unverified file. Files already in `dest` that verify are kept. When `dest` holds another
    known dataset's files (MNIST's, for Fashion-MNIST), they are left alone and the download
    goes into `dest`/NAME instead (where `find_data_dir` looks first). A mirror that cannot be
    reached is skipped for the later files. `progress(file, bytes_done, bytes_total)` is
    called as bytes arrive (bytes_total is None when the server does not send a length).
    Returns `dest`; raises DataError listing each failed file and each mirror's reason.
    """
    info = dataset_info(dataset)
    if info is None:
        raise DataError(f"cannot download '{dataset}': it is not a known dataset"
                        f"{did_you_mean(dataset, KNOWN)}; known: {', '.join(KNOWN)}")
    mirrors = tuple(info.mirrors if mirrors is None else mirrors)
    dest = Path(dest).expanduser()
    if dest.is_dir() and other_dataset(dest, info) is not None:  # never replace those files
        dest = dest / info.name
    if not mirrors:
        raise DataError(f"no mirrors to download '{info.name}' from")
    created = absent_dirs(dest)  # removed again (if empty) when nothing could be fetched
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_empty(created)
        raise DataError([Problem(f"cannot create the download directory: {exc.strerror or exc}"
                                 "; pass another one with --data-dir", file=str(dest))]) from None
    failures: list[Problem] = []
    down: dict[str, str] = {}  # mirror -> why it was unreachable
    for name in info.files:
        expected = info.sha256.get(name)
        if _verified(file_in(dest, name), expected, info):
            continue
        target = dest / f"{name}.gz"
        tried = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{name}.gz"
            if mirror in down:
                tried.append(f"{url}: skipped, unreachable for an earlier file")
                continue
            try:
                _fetch(url, target, expected, progress, timeout, info)
                break
            except MirrorDown as exc:
                down[mirror] = str(exc)
                tried.append(f"{url}: {exc}")
            except FetchError as exc:
                tried.append(f"{url}: {exc}")
        else:
            failures.append(Problem(f"{name}.gz: every mirror failed:\n    " + "\n    ".join(tried),
                                    file=str(dest)))
    if failures:
        done = [n for n in info.files if file_in(dest, n) is not None]
        head = (f"could not download '{info.name}' into {dest} "
                f"({len(failures)} of {len(info.files)} files failed"
                + (f"; {', '.join(done)} are in place" if done else "") + ")")
        if not done:
            remove_empty(created)
        tail = (f"fix: check the network, or download the files yourself, put them in one "
                f"directory and pass it with --data-dir or ${ENV_VAR}")
        raise DataError([Problem(head), *failures, Problem(tail)])
    return dest


def absent_dirs(dest: Path) -> list[Path]:
    """`dest` and those of its parents that do not exist yet, deepest first."""
    absent = []
    for path in (dest, *dest.parents):
        try:
            path.stat()
        except OSError:
            absent.append(path)
            continue
        break
    return absent


def remove_empty(dirs: list[Path]) -> None:
    """Remove the directories netspec created, deepest first, as long as they are empty."""
    for path in dirs:
        try:
            path.rmdir()  # fails (and stops) on a directory that holds anything
        except OSError:
            return


def _verified(path: Path | None, expected: str | None, info: DatasetInfo) -> bool:
    """Whether `path` exists, is valid IDX, and matches `expected` (when given)."""
    if path is None:
        return False
    try:
        digest = check_idx_file(path, info.max_content_bytes)
    except (OSError, ValueError):
        return False
    return expected is None or digest == expected


def _fetch(url: str, target: Path, expected: str | None, progress: Progress | None,
           timeout: float, info: DatasetInfo) -> None:
    """Download `url` into `target` atomically; FetchError if it fails.

    The bytes are checked (IdxCheck), hashed and counted as they arrive, so a page that is
    not IDX, or a file over the dataset's size caps, is refused mid-stream, and nothing is
    decompressed whole in memory.
    """
    cap = info.max_download_bytes
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".part")
        chmod_as_open(fd, target)  # the umask's mode, not mkstemp's 0600
    except OSError as exc:
        raise DataError([Problem(f"cannot write in the download directory: "
                                 f"{exc.strerror or exc}", file=str(target.parent))]) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            response = open_url(url, timeout)
            with response:
                length = response.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() else None
                if total is not None and total > cap:
                    raise FetchError(f"the server announces {total:,} bytes, more than the "
                                      f"{cap:,} a file of '{info.name}' can be")
                check = IdxCheck(info.max_content_bytes)
                done = 0
                if progress is not None:
                    progress(target.name, 0, total)
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except TimeoutError:
                        raise MirrorDown(f"timed out after {timeout:g} s mid-transfer") from None
                    except (http.client.HTTPException, OSError) as exc:
                        raise FetchError(f"transfer failed after {done} bytes: "
                                          f"{exc!r}") from None
                    if not chunk:
                        break
                    done += len(chunk)
                    if done > cap:
                        raise FetchError(f"sent more than {cap:,} bytes, more than a file of "
                                          f"'{info.name}' can be; stopped")
                    try:
                        check.feed(chunk)
                    except ValueError as exc:
                        raise FetchError(f"served a file that is not valid IDX data: {exc}") \
                            from None
                    out.write(chunk)  # an OSError here (disk full) is not the mirror's fault
                    if progress is not None:
                        progress(target.name, done, total)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and done != total:
            raise FetchError(f"transfer cut short: got {done} of {total} bytes")
        try:
            digest = check.finish()
        except ValueError as exc:
            raise FetchError(f"served a file that is not valid IDX data: {exc}") from None
        if expected is not None and digest != expected:
            raise FetchError(f"checksum mismatch: SHA-256 of the decompressed content is "
                              f"{digest}, expected {expected}")
        os.replace(tmp, target)
    except OSError as exc:
        raise DataError([Problem(f"cannot write the download: {exc.strerror or exc}",
                                 file=str(target))]) from None
    finally:
        tmp.unlink(missing_ok=True)  # after os.replace there is nothing left to remove


def open_url(url: str, timeout: float):
    """The HTTP response for `url`; FetchError/MirrorDown saying why it failed."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise FetchError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise MirrorDown(f"timed out after {timeout:g} s") from None
        raise MirrorDown(f"cannot connect: {getattr(reason, 'strerror', None) or reason}") \
            from None
    except TimeoutError:
        raise MirrorDown(f"timed out after {timeout:g} s") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        raise FetchError(f"request failed: {exc!r}") from None

