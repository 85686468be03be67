"""Memory for the plans' large working arrays, on transparent huge pages where Linux allows.

A worker's training step streams through about a hundred workspace arrays of 1-4 MB
(activations, im2col and Winograd buffers). Allocated with malloc they sit on 4 KiB pages
(NumPy asks for huge pages only from 4 MiB, and malloc does not align to 2 MiB), and the TLB
misses cost: record.yaml's and vgg-bn's worker steps took 0.93-0.97 of the time with every array
of at least HUGE_MIN in its own 2 MiB-aligned mapping marked MADV_HUGEPAGE, and the same results
bit for bit (benchmarks/pages_probe.py). A process of record.yaml then held 292 MB instead of
237 (an array of 1 MiB occupies a 2 MiB page); a 512 KiB threshold gave 0.88-0.90 for 379 MB
(benchmarks/README.md). Without MADV_HUGEPAGE (not Linux), or for smaller arrays: np.empty.
"""

import math
import mmap

import numpy as np

HUGE_MIN = 1 << 20  # bytes: smaller arrays use np.empty
_PAGE = 2 << 20  # a huge page on x86-64 and arm64 (4 KiB base pages)


def empty(shape, dtype) -> np.ndarray:
    """np.empty(shape, dtype), on huge pages when it is at least HUGE_MIN bytes."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_MIN or advice is None:
        return np.empty(shape, dtype)
    size = -(-nbytes // _PAGE) * _PAGE
    # anonymous and private (copied on write after a fork; MAP_SHARED would share a forked
    # worker's arrays with its parent, and shared memory gets no transparent huge pages)
    try:
        area = mmap.mmap(-1, size + _PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:  # e.g. vm.max_map_count reached: plain memory (np.empty reports real OOM)
        return np.empty(shape, dtype)
    start = -np.frombuffer(area, np.uint8, 1).ctypes.data % _PAGE  # first 2 MiB boundary
    try:
        area.madvise(advice, start, size)
    except OSError:  # huge pages disabled for this process or kernel: still valid memory
        pass
    return np.frombuffer(area, np.uint8, nbytes, start).view(dtype).reshape(shape)
