"""Giving freed memory back to the operating system between tiles.

A long tiled run (segment everything over thousands of tiles) allocates and frees many mid-sized buffers per tile.
glibc's allocator serves them from its heap once a large block has been freed (its mmap threshold rises), and the
heap fragments: on a 4096² image the resident memory grew by about 0.5 MiB per tile, all of it free memory that the
heap kept. ``malloc_trim(0)`` after each tile returns it (measured: +190 MiB down to +59 MiB on 2048², 121 tiles).
Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> None:
    """Return the allocator's free memory to the operating system, where the C library allows it (glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
