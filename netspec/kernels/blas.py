"""BLAS thread limits for the worker processes and the trainer (threadpoolctl).

The number of threads is a plan option (netspec/plan/options.py), decided when the plan is
built; these apply it: `limit` for a block of code, `limit_process` for a forked worker's
lifetime. Nothing reads the thread count back at run time.
"""

from contextlib import contextmanager


@contextmanager
def limit(threads: int):
    """Within the context, BLAS runs `threads` threads."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads, user_api="blas"):
        yield


def limit_process(threads: int) -> None:
    """BLAS runs `threads` threads from now on in this process (a forked worker)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads, user_api="blas")
