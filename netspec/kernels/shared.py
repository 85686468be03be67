"""Memory that worker processes share (netspec/train/pool.py), and memory that they share only
while a pool runs.

`shared_array`: a zeroed array in a shared anonymous mapping, for a pool's own arrays
(children's gradients, batch indices, the batch exchange's rows): every process forked after
it is made sees the same memory.

`Arena`: a plan's parameters and buffers. It is a private mapping, so a process forked from a
plan that runs alone gets its own copy on write, as with any NumPy array. While a pool runs,
`share()` maps the same addresses as shared memory holding the same bytes: every view taken
before (plan.params, each layer's closures, the optimizer's references) stays valid, and the
forked workers compute with the parameters the parent's optimizer wrote, with no copy per step.
`unshare()` makes the range private again once the pool is closed.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os

import numpy as np

_MAP_FIXED = 0x10  # Linux, every architecture netspec's workers run on (not in the mmap module)


def shared_array(shape, dtype) -> np.ndarray:
    """A zeroed array in memory that processes forked after this call share (MAP_SHARED)."""
    count = math.prod(shape)
    buf = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1))
    return np.frombuffer(buf, dtype, count).reshape(shape)


class Arena:
    """nbytes of zeroed, page-aligned memory, private until `share()` (see the module
    docstring). Carve arrays from it with `array`."""

    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self._map = mmap.mmap(-1, self.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._bytes = np.frombuffer(self._map, np.uint8)  # (nbytes,), the whole range
        self.users = 0  # shares not yet undone

    def array(self, offset: int, shape, dtype) -> np.ndarray:
        """A view of `shape` and `dtype` at byte `offset` (a multiple of the dtype's size)."""
        count = math.prod(shape)
        return np.frombuffer(self._map, dtype, count, offset).reshape(shape)

    def share(self) -> None:
        """From now on, processes forked from this one share the arena. Calls nest: each
        `share` is undone by one `unshare` (two pools on one plan share it until both close)."""
        if self.users == 0:
            self._remap(mmap.MAP_SHARED)
        self.users += 1

    def unshare(self) -> None:
        """Undo one `share`; after the last, the arena is private again: later forks get
        copies, and processes forked before keep the shared memory they hold."""
        if self.users == 1:
            self._remap(mmap.MAP_PRIVATE)
        self.users = max(0, self.users - 1)

    @property
    def shared(self) -> bool:
        return self.users > 0

    def _remap(self, kind: int) -> None:
        """Replace the mapping under the arena's addresses with a new anonymous one of `kind`
        (MAP_SHARED or MAP_PRIVATE) holding the same bytes."""
        saved = self._bytes.copy()
        address = self._bytes.ctypes.data
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        got = libc.mmap(address, self.nbytes, mmap.PROT_READ | mmap.PROT_WRITE,
                        kind | mmap.MAP_ANONYMOUS | _MAP_FIXED, -1, 0)
        if got != address:
            error = ctypes.get_errno()
            raise OSError(error, f"could not remap {self.nbytes} bytes of parameters: "
                                 f"{os.strerror(error)}")
        self._bytes[...] = saved
