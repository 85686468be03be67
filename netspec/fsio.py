"""Safe file output: atomic writes, run directories, and OS errors as located NetspecErrors.

    atomic_write(path, data)        # temp file in the same directory, fsync, os.replace;
                                    # data is bytes, str, or write(f) filling the binary file
    claim_run_dir(path)             # create or adopt an output directory for a new run
    check_run_dir(path)             # the directory must be a netspec run (for --resume)
    unique_dir(parent, stem)        # create parent/stem (or stem-2, stem-3, ...), never shared
    lock = run_lock(path)           # the one writer of a run directory (lock.release())
    os_problem(exc, path, doing)    # an OSError -> Problem naming the file and a fix

Files netspec creates get the mode an ordinary `open` would give them (0o666 minus the umask:
0644 under the usual 022), not mkstemp's 0600; a file replaced keeps its mode.

One writer per run: `run_lock` takes a POSIX lock (fcntl.lockf) on RUN_LOCK in the directory
and writes who holds it. The operating system drops the lock when its process ends, however it
ends, so a lock file left by a killed run blocks nothing; a second writer, in another process
or in this one, is refused with an OutputError naming the holder.

A directory is *a netspec run* when it holds the marker file RUN_MARKER (`.netspec-run`),
which `claim_run_dir` writes before anything else, or (runs made before the marker existed)
`checkpoints/last.npz` or `metrics.jsonl`. netspec writes into a directory only if it is new,
empty, or a netspec run, so it never overwrites a file it did not write.

Like the rest of the library this module never prints; every failure is an OutputError.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from netspec.errors import OutputError, Problem

RUN_MARKER = ".netspec-run"
LOCK = ".netspec-lock"  # see run_lock; not a sign of a run by itself, nor a foreign file
LEGACY_RUN_FILES = ("checkpoints/last.npz", "metrics.jsonl")  # runs from before the marker

# What to do about each OS error, by errno (the message names the file separately).
_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is exhausted; free some space or write elsewhere",
    errno.EACCES: "permission denied; choose a directory you can write to",
    errno.EPERM: "the operating system does not allow this here; choose a normal directory",
    errno.EROFS: "the file system is read-only; choose a writable directory",
    errno.ENAMETOOLONG: "the name is too long for the file system; choose a shorter path",
    errno.ENOTDIR: "a part of the path is a file, not a directory; choose another path",
    errno.EISDIR: "it is a directory; give a file name",
    errno.ENOENT: "a parent directory does not exist and cannot be created here; "
                  "choose another path",
    errno.EEXIST: "a file of that name is in the way; choose another path",
    errno.ENOMEM: "out of memory",
    errno.EIO: "input/output error from the device; check the disk",
}


def os_problem(exc: OSError, path, doing: str = "write") -> Problem:
    """A Problem for `exc`, raised while trying to `doing` (a verb phrase) at `path`."""
    what = exc.strerror or str(exc)
    advice = _ADVICE.get(exc.errno or 0)
    if _is_virtual(Path(path)) and exc.errno in (errno.ENOENT, errno.EPERM, errno.EACCES):
        advice = "/proc, /sys and /dev are not ordinary directories; write elsewhere"
    return Problem(f"cannot {doing}: {what}" + (f"; {advice}" if advice else ""),
                   file=str(path))


def _is_virtual(path: Path) -> bool:
    parts = Path(os.path.abspath(path)).parts
    return len(parts) > 1 and parts[1] in ("proc", "sys", "dev")


def atomic_write(path, data: bytes | str | Callable, doing: str = "write") -> Path:
    """Write `data` to `path` atomically: a temp file beside it, fsync, then os.replace.

    `data` is bytes, str (UTF-8), or a callable `write(f)` that writes into the open binary
    temp file (e.g. `lambda f: np.savez(f, **arrays)`). On any failure the temp file is removed
    and the previous content of `path` is intact; an OSError becomes an OutputError naming
    `path` and saying what failed ("cannot <doing>: ...").
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    write = data if callable(data) else (lambda f: f.write(data))
    check_output_path(path, doing)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        chmod_as_open(fd, path)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError([os_problem(exc, path, doing)]) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def umask() -> int:
    """The process's umask, read without changing it where Linux allows (/proc), since
    os.umask can only be read by setting it, which races with other threads."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_as_open(fd: int, path: Path) -> None:
    """Give the temp file behind `fd` the mode of the file it replaces, or else the mode a new
    file gets from open(): 0o666 minus the umask."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~umask()
    os.fchmod(fd, mode)


def check_output_path(path, doing: str = "write", ours=None) -> Path:
    """OutputError unless a regular file may be written at `path`: not under /proc, /sys or
    /dev, not a directory, device or pipe, and, with `ours` (a function path -> bool telling
    a file netspec wrote by its content), no existing file netspec did not write."""
    path = Path(path)
    if _is_virtual(path):
        raise OutputError([Problem(f"cannot {doing}: /proc, /sys and /dev hold devices and "
                                   "kernel files, not output; write elsewhere", file=str(path))])
    kind = _kind(path, doing)
    if kind == "dir" or (kind == "file" and not os.path.isfile(path)):
        raise OutputError([Problem(f"cannot {doing}: it exists and is not a regular file (a "
                                   "directory, device or pipe); give a file name",
                                   file=str(path))])
    if kind == "file" and ours is not None and not ours(path):
        raise OutputError([Problem(f"cannot {doing}: the file exists and netspec did not write "
                                   "it; choose another file, or move it away", file=str(path))])
    return path


def read_head(path, limit: int) -> str:
    """The first `limit` bytes of a file as text ('' if it cannot be read), to recognise a
    file netspec wrote by its content."""
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def is_run_dir(path) -> bool:
    """Whether `path` is a directory netspec made for a run (see the module docstring)."""
    return any(_kind(Path(path) / name) == "file" for name in (RUN_MARKER, *LEGACY_RUN_FILES))


def _kind(path: Path, doing: str = "") -> str | None:
    """'file', 'dir' or None (absent, or under a file). With `doing`, an OS error other than
    absence (a name too long, no permission) is an OutputError; without it, None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if doing and exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise OutputError([os_problem(exc, path, doing)]) from None
        return None
    return "dir" if stat.S_ISDIR(mode) else "file"


def _entries(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        raise OutputError([os_problem(exc, path, "read the directory")]) from None


def claim_run_dir(path, version: str = "") -> Path:
    """Make `path` the directory of a new run: create it, or adopt it if empty.

    Refused (OutputError): a path that is a file or lies under one, a directory that holds
    files netspec did not write, and every path the OS will not let us create. A netspec run
    directory is refused only by the caller's own rules (e.g. it already has a checkpoint).
    Writes RUN_MARKER first, so a run that dies at once is still recognised as netspec's.
    """
    path = check_new_run_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError([os_problem(exc, path, "create the run directory")]) from None
    marker = json.dumps({"netspec": version, "what": "a netspec run directory"}) + "\n"
    atomic_write(path / RUN_MARKER, marker)
    return path


def check_new_run_dir(path) -> Path:
    """The checks of `claim_run_dir`, without creating anything (to fail before slow work)."""
    path = Path(path)
    if _is_virtual(path):
        raise OutputError([Problem("cannot use it as a run directory: /proc, /sys and /dev hold "
                                   "devices and kernel files; write elsewhere", file=str(path))])
    kind = _kind(path, "use this path for the run directory")
    if kind == "file":
        raise OutputError([Problem("is a file, not a directory; --out needs a directory "
                                   "(new or empty)", file=str(path))])
    if kind == "dir" and not is_run_dir(path):
        entries = [e for e in _entries(path) if e != LOCK]  # a run that died at its start
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise OutputError([Problem(
                f"the directory is not empty ({shown}) and is not a netspec run (it has no "
                f"{RUN_MARKER} file); netspec never overwrites files it did not write: choose "
                "a new or empty directory for --out", file=str(path))])
    return path


def check_run_dir(path) -> Path:
    """`path` must be an existing netspec run directory (for resuming)."""
    path = Path(path)
    if _kind(path, "read the run directory") != "dir":
        raise OutputError([Problem("no such run directory", file=str(path))])
    if not is_run_dir(path):
        raise OutputError([Problem(
            f"not a netspec run directory (no {RUN_MARKER}, checkpoints/last.npz or "
            "metrics.jsonl); give the directory `netspec train --out` wrote", file=str(path))])
    return path


def make_dirs(path) -> Path:
    """mkdir -p `path`; an OSError becomes an OutputError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError([os_problem(exc, path, "create the directory")]) from None
    return path


def unique_dir(parent, stem: str) -> Path:
    """Create and return parent/stem, or parent/stem-2, stem-3, ... when taken: mkdir either
    creates a directory or fails, so two processes never get the same one."""
    parent = make_dirs(parent)
    for k in range(1, 10_000):
        path = parent / (stem if k == 1 else f"{stem}-{k}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError([os_problem(exc, path, "create the run directory")]) from None
        return path
    raise OutputError([Problem(f"cannot find a free name {stem}-N; clean up the directory",
                               file=str(parent))])


def remove_if_empty(path) -> None:
    """Remove the directory `path` if it holds nothing (a run that never started)."""
    with contextlib.suppress(OSError):
        os.rmdir(path)


_HELD: dict[tuple[int, int], int] = {}  # (device, inode) of each lock file held -> its fd


class RunLock:
    """The lock `run_lock` took; `release()` (or the end of the process) drops it."""

    def __init__(self, path: Path, fd: int | None, key: tuple[int, int] | None):
        self.path, self._fd, self._key = path, fd, key

    def release(self) -> None:
        if self._fd is None:
            return
        _HELD.pop(self._key, None)
        with contextlib.suppress(OSError):
            os.close(self._fd)  # closing drops the POSIX lock
        self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.release()


def run_lock(path, sign: bool = True) -> RunLock:
    """Lock the run directory `path` (which must exist) for this process, or raise an
    OutputError naming the process that holds it. See the module docstring. With `sign`, the
    lock file says who holds it (without, a probe writes nothing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return RunLock(Path(path), None, None)
    path = Path(path)
    lock = path / LOCK
    try:
        st = os.stat(lock)
        held = _HELD.get((st.st_dev, st.st_ino))
        if held is not None:  # this process writes the run already (opening and closing the
            raise OutputError([_in_use(path, _read_holder(held))])  # file would unlock it)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OutputError([os_problem(exc, lock, "lock the run directory")]) from None
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise OutputError([os_problem(exc, lock, "lock the run directory")]) from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_holder(fd)
        os.close(fd)  # this process held no lock on it, so closing drops nothing
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            raise OutputError([_in_use(path, holder)]) from None
        if exc.errno == errno.ENOLCK:  # a file system without locks: run unlocked
            return RunLock(path, None, None)
        raise OutputError([os_problem(exc, lock, "lock the run directory")]) from None
    if sign:
        _sign(fd)
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    _HELD[key] = fd
    return RunLock(path, fd, key)


def _sign(fd: int) -> None:
    import socket
    import sys
    import time

    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    program = "netspec" if program in ("__main__.py", "netspec") else program
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join([program, *sys.argv[1:]])}
    with contextlib.suppress(OSError):  # who holds it is only for the messages
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)


def check_unlocked(path) -> None:
    """Refuse (OutputError) a run directory another process holds, without writing anything:
    the check run_lock makes, done early (before slow work) where a lock file exists."""
    lock = Path(path) / LOCK
    if _kind(lock) == "file":
        run_lock(path, sign=False).release()


def _read_holder(fd: int) -> dict:
    """Who holds the lock, as written in the file open at `fd` (never through another file
    descriptor: closing one would drop this process's own lock)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _in_use(path: Path, holder: dict) -> Problem:
    who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since "
           f"{holder.get('since', '?')}: {holder.get('command', '?')}") if holder else "?"
    return Problem(f"the run directory is in use by another netspec process ({who}); wait for "
                   "it to end, or stop it (Ctrl-C saves a checkpoint; then continue with "
                   "--resume), or choose another --out", file=str(path))
