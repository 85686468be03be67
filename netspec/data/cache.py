"""The decode cache: image files are decoded once, in parallel, into a memory-mapped array that
later runs open without decoding again.

    entry = cached(key) or decode_into_cache(key, files, settings, shape, ...)
    entry.pixels    uint8 (N, C, H, W), memory-mapped read-only: datasets larger than memory
                    are paged in by the OS as batches need them
    entry.kept      (N,) indices into `files` of the rows (files that could not be decoded are
                    left out when skipping, else they are an error before anything is cached)

An entry lives in $XDG_CACHE_HOME/netspec/decoded/KEY/ (pixels.npy, kept.npy, meta.json), KEY
being the SHA-256 of everything that decides the pixels (`cache_key`): the files' paths, sizes,
modification times and labels, the image settings and shape, Pillow's version and this format's.
An entry is written into a temporary folder and renamed into place once complete, so an
interrupted decode leaves no entry that looks whole. Delete the folder to reclaim the space.

Decoding runs in forked worker processes (Linux), each writing its chunks of rows straight
into the memory map; `progress(name, done, total)` is called in the calling process.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netspec.data.images import BadFile, decode, header
from netspec.data.locate import cache_dir

FORMAT = 1  # bump when the decoded pixels of the same files and settings change
CHUNK = 64  # files per task sent to a worker


@dataclass(frozen=True)
class Entry:
    pixels: np.ndarray  # uint8 (N, C, H, W), memory-mapped
    kept: np.ndarray  # int64 (N,): the index in the file list of each row
    bad: list  # [(file, reason)] left out
    path: Path  # the entry's folder
    seconds: float  # decoding time (0 when read from the cache)


def cache_root() -> Path:
    return cache_dir("decoded")


def cache_key(files, settings: dict, shape_request: tuple) -> str:
    """SHA-256 of what decides the decoded pixels: files (path, bytes, mtime, label), image
    settings, the requested input shape, Pillow's and this cache's format version."""
    from PIL import __version__ as pillow

    sha = hashlib.sha256(json.dumps({"format": FORMAT, "pillow": pillow, "settings": settings,
                                     "shape": list(shape_request)}, sort_keys=True).encode())
    for f in files:
        sha.update(f"\n{f.path}\0{f.size}\0{f.mtime_ns}\0{f.label}".encode())
    return sha.hexdigest()


def cached(key: str) -> Entry | None:
    """The complete cache entry `key`, or None."""
    folder = cache_root() / key
    try:
        meta = json.loads((folder / "meta.json").read_text())
        pixels = np.load(folder / "pixels.npy", mmap_mode="r")
        kept = np.load(folder / "kept.npy")
    except (OSError, ValueError):
        return None
    if pixels.shape[0] != len(kept) or meta.get("format") != FORMAT:
        return None
    return Entry(pixels, kept, [tuple(b) for b in meta.get("bad", [])], folder, 0.0)


def workers_for(requested: int, n: int) -> int:
    """Processes to decode `n` files with: `requested`, or one per core (0); 1 for few files or
    where fork is unavailable."""
    if n < 2 * CHUNK or not sys.platform.startswith("linux"):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(requested or cores, cores, -(-n // CHUNK)))


def read_headers(files, max_pixels: int, workers: int, progress=None, name="") -> list:
    """header() of every file, in order: (w, h, gray) or (None, None, reason)."""
    paths = [f.path for f in files]
    tasks = [(paths[i:i + CHUNK], max_pixels) for i in range(0, len(paths), CHUNK)]
    out = []
    for part in _run(_headers_task, tasks, workers, progress, f"checking {name}"):
        out += part
    return out


def _headers_task(args):
    paths, max_pixels = args
    return [header(p, max_pixels) for p in paths]


def decode_into_cache(key: str, files, settings: dict, shape: tuple, skip: set,
                      workers: int, progress=None, name: str = "") -> tuple:
    """Decode every file not in `skip` (indices) into a new cache entry of `shape` (C, H, W),
    in a temporary folder.

    Returns (pending, bad): bad lists (index, reason) of the files that failed to decode;
    `pending.store(key, bad_files)` keeps the entry (the rows that decoded), `pending.discard()`
    drops it.
    """
    root = cache_root()
    start = time.perf_counter()
    todo = np.array([i for i in range(len(files)) if i not in skip], np.int64)
    tmp = root / f".{key}.{os.getpid()}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        pixels = np.lib.format.open_memmap(tmp / "pixels.npy", "w+", np.uint8,
                                           (len(todo), *shape))
        del pixels  # the workers open it themselves; nothing is held in this process
        paths = [str(files[i].path) for i in todo]
        tasks = [(tmp / "pixels.npy", lo, paths[lo:lo + CHUNK], settings, shape)
                 for lo in range(0, len(paths), CHUNK)]
        bad = []
        for part in _run(_decode_task, tasks, workers, progress, f"decoding {name}"):
            bad += [(int(todo[row]), reason) for row, reason in part]
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _Pending(tmp, todo, bad, time.perf_counter() - start), bad


@dataclass
class _Pending:
    """A decoded but not yet stored entry (in its temporary folder)."""

    tmp: Path
    todo: np.ndarray
    bad: list
    seconds: float

    def store(self, key: str, bad_files: list) -> Entry:
        """Keep the rows that decoded (compacting if some did not) and rename the entry into
        place. `bad_files` ((file, reason), every file left out) is recorded with it."""
        failed = {i for i, _ in self.bad}
        keep = np.array([k for k, i in enumerate(self.todo) if int(i) not in failed], np.int64)
        path = self.tmp / "pixels.npy"
        if len(keep) != len(self.todo):  # copy the good rows into a smaller array
            src = np.load(path, mmap_mode="r")
            dst = np.lib.format.open_memmap(self.tmp / "good.npy", "w+", np.uint8,
                                            (len(keep), *src.shape[1:]))
            for lo in range(0, len(keep), 4096):
                dst[lo:lo + 4096] = src[keep[lo:lo + 4096]]
            dst.flush()
            del src, dst
            os.replace(self.tmp / "good.npy", path)
        np.save(self.tmp / "kept.npy", self.todo[keep])
        (self.tmp / "meta.json").write_text(json.dumps(
            {"format": FORMAT, "bad": [list(b) for b in bad_files],
             "seconds": self.seconds}))
        final = self.tmp.parent / self.tmp.name.split(".")[1]
        try:
            os.rename(self.tmp, final)
        except OSError:  # another process stored the same entry meanwhile: use theirs
            shutil.rmtree(self.tmp, ignore_errors=True)
        entry = cached(final.name)
        if entry is None:
            raise OSError(f"the decode cache entry {final} could not be read back")
        return Entry(entry.pixels, entry.kept, entry.bad, final, self.seconds)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _decode_task(args):
    """Decode a chunk of files into rows lo.. of the memory map; [(row, reason)] of failures."""
    path, lo, paths, settings, shape = args
    out = np.load(path, mmap_mode="r+")
    bad = []
    for k, file in enumerate(paths):
        try:
            out[lo + k] = decode(Path(file), settings, shape)
        except BadFile as e:
            bad.append((lo + k, str(e)))
    out.flush()
    del out
    return bad


def _run(task, tasks: list, workers: int, progress, label: str):
    """Yield task(t) for each t, in order, on `workers` forked processes (or here), calling
    progress(label, files done, files in all) as results arrive."""
    sizes = [len(t[0]) if task is _headers_task else len(t[2]) for t in tasks]
    total, done = sum(sizes), 0
    if progress is not None:
        progress(label, 0, total)
    if workers <= 1:
        results = map(task, tasks)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(workers)
        results = pool.imap(task, tasks)
    try:
        for size, result in zip(sizes, results):
            done += size
            if progress is not None:
                progress(label, done, total)
            yield result
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
