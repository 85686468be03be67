"""netspec/kernels/pages.py: large workspace arrays on 2 MiB-aligned private mappings (huge
pages where Linux allows), small ones and platforms without MADV_HUGEPAGE on np.empty; a
forked worker's writes stay its own."""

import mmap
import os

import numpy as np
import pytest

from netspec.kernels import pages
from netspec.nn.layers import Workspace


def test_a_large_array_is_aligned_writable_and_the_right_shape():
    a = pages.empty((3, 1 << 18), np.float32)  # 3 MiB
    assert a.shape == (3, 1 << 18) and a.dtype == np.float32 and a.flags.c_contiguous
    if hasattr(mmap, "MADV_HUGEPAGE"):
        assert a.ctypes.data % (2 << 20) == 0
    a[...] = 2.5
    assert float(a.sum()) == 2.5 * a.size


def test_small_arrays_and_platforms_without_huge_pages_use_np_empty(monkeypatch):
    assert pages.empty((10,), np.float64).base is None  # np.empty's own memory
    monkeypatch.delattr(mmap, "MADV_HUGEPAGE", raising=False)
    big = pages.empty((1 << 20,), np.float32)
    assert big.base is None and big.shape == (1 << 20,)


def test_a_failed_mapping_falls_back_to_np_empty(monkeypatch):
    def no_map(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")  # as when vm.max_map_count is reached

    monkeypatch.setattr(mmap, "mmap", no_map)
    a = pages.empty((1 << 20,), np.float32)
    assert a.base is None and a.shape == (1 << 20,)


def test_workspace_fill_and_zero_apply_to_huge_arrays():
    ws = Workspace(np.float32)
    assert np.all(ws("ones", (1 << 19,), fill=1) == 1)
    assert np.all(ws("zeros", (1 << 19,), zero=True) == 0)
    ws("ones", (1 << 19,))[...] = 7  # an existing array is returned as it is
    assert np.all(ws("ones", (1 << 19,), fill=1) == 7)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_its_own_copy():
    a = pages.empty((1 << 19,), np.float32)
    a[...] = 1
    pid = os.fork()
    if pid == 0:  # the child
        a[...] = 2
        os._exit(0 if a[0] == 2 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert np.all(a == 1)  # not shared with the child (a MAP_SHARED mapping would be)
