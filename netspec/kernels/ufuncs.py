"""NumPy's ufunc buffer size while a plan runs (`ufunc_buffer`), set by the plan's forward and
backward loops and by `netspec bench`.
"""

from contextlib import contextmanager

import numpy as np

# NumPy's ufunc buffer size (elements) while a plan runs. The layers' elementwise ops work on
# strided views (pooling taps, col2im slices) whose contiguous rows are a few hundred elements
# long. With NumPy's default 8192 the buffered iterator copies such operands through buffers to
# get longer inner loops, which is slower than working on the rows in place; a smaller buffer
# makes NumPy take the rows directly, and much smaller ones slow down the ops that cast (bool
# masks). Measurements: docs/performance.md.
UFUNC_BUFSIZE = 1024


@contextmanager
def ufunc_buffer(size: int = UFUNC_BUFSIZE):
    """Run the block with NumPy's ufunc buffer at `size` elements (see UFUNC_BUFSIZE)."""
    old = np.setbufsize(size)
    try:
        yield
    finally:
        np.setbufsize(old)
