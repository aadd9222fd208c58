"""glibc's allocator, tuned for torch on CPU.

By default glibc serves every allocation above 128 KB-32 MB (its threshold adapts) with a fresh mmap and
unmaps it on free, so each new activation tensor of a forward pass starts with page faults: about 7,000
per small-preset forward pass at batch 128, a tenth of its time (`medm2t bench model`). Serving them from
the heap, and keeping freed heap memory for reuse instead of trimming it, removes those faults. The price
is that freed memory stays with the process, up to its peak use. Nothing happens where libc is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 1024 * 1024             # glibc's largest: allocations above it are still mmapped
TRIM_THRESHOLD = 512 * 1024 * 1024            # free heap kept before glibc gives memory back
_done = False


def reuse_freed_memory() -> bool:
    """Apply the tuning once per process; True when it is in effect."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not _done:
        log.debug("mallopt refused the allocator tuning")
    return _done
