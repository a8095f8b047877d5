"""glibc's allocator set to keep freed memory for reuse, for training.

A training step allocates and frees the same few-megabyte tensors (a band's activations,
their gradients) hundreds of times. glibc hands blocks above its mmap threshold back to the
system when freed, and trims the heap's free top above its trim threshold, so each new block
is faulted in again page by page: a [16384,64] float32 copy took 2-3 times as long into
a fresh block as into a reused one, and a training step 8-20% longer (README, Speed).
:func:`keep_freed_memory` raises both thresholds: blocks up to ``MMAP_THRESHOLD`` come
from the heap, which keeps up to ``TRIM_THRESHOLD`` free for the next step.

``infer.py`` leaves glibc as it is: its tiles' tensors are few and large, and a 24 Mpx
photo took the same time either way (41 s against 40 s), peak memory within 50 MB.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameters, glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 512 << 20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process.

    Returns False, and changes nothing, where the C library is not glibc (macOS, Windows,
    musl) or refuses the setting.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
