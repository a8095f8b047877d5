"""Tests for kpn.train.allocator: freed blocks stay in glibc's heap for the next step."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from kpn.train.allocator import MMAP_THRESHOLD, keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
# above glibc's largest dynamic mmap threshold (32 MiB), below kpn's: mapped apart and
# returned when freed unless the thresholds are raised
BLOCK_BYTES = 48 << 20


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_freed_block_stays_in_heap() -> None:
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):  # glibc before 2.33
        pytest.skip("no mallinfo2")
    libc.mallinfo2.restype = MallInfo2
    assert BLOCK_BYTES < MMAP_THRESHOLD
    assert keep_freed_memory()
    before = libc.mallinfo2()
    block = torch.empty(BLOCK_BYTES // 4)
    during = libc.mallinfo2()
    del block
    after = libc.mallinfo2()
    assert during.hblkhd == before.hblkhd  # from the heap, not mapped
    assert after.fordblks >= BLOCK_BYTES  # kept free, not trimmed


@pytest.mark.skipif(GLIBC, reason="other C libraries")
def test_other_libraries_unchanged() -> None:
    assert keep_freed_memory() is False
