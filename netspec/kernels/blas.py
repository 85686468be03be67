"""The BLAS thread count netspec itself set, kept where hot code can read it for free.

Asking threadpoolctl how many threads BLAS runs (threadpool_info) costs milliseconds, far too
much per layer call. So the worker pool limits the BLAS threads through `limit` (a context)
or `limit_process` (for a forked worker's lifetime), which also record the count in THREADS.
conv2d reads it to pick its Winograd training path, which only pays with one BLAS thread
(netspec/nn/layers/conv2d.py). THREADS is None when netspec set no limit this way: BLAS runs its
default, one thread per core, or a limit set directly with threadpoolctl, as sweep trials do
(netspec/sweep/trial.py), which therefore keep the GEMM conv paths.
"""

from contextlib import contextmanager

THREADS: int | None = None


@contextmanager
def limit(threads: int):
    """Within the context, BLAS runs `threads` threads and THREADS says so."""
    global THREADS
    from threadpoolctl import threadpool_limits

    before = THREADS
    with threadpool_limits(threads, user_api="blas"):
        THREADS = threads
        try:
            yield
        finally:
            THREADS = before


def limit_process(threads: int) -> None:
    """BLAS runs `threads` threads from now on in this process (a forked worker)."""
    global THREADS
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads, user_api="blas")
    THREADS = threads
