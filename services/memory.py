"""Memory of a long-running process: the garbage collector kept quiet, large buffers given
back to the operating system (glibc's malloc).

glibc serves a block of 128 KiB or more with mmap and unmaps it when freed, but each such free
raises that threshold to the block's size (up to 32 MiB), so after one 20 MB request body every
later one comes from the heap, which fragments and keeps its pages: an edge grew from 69 MB to
236 MB after six concurrent 10-20 MB requests and never shrank. A fixed threshold turns the
dynamic one off; the edge's usual allocations are far smaller, so its hot path is unchanged.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

_M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 256 * 1024


def return_large_blocks_to_the_os(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Fixes malloc's mmap threshold; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def quiet_gc() -> None:
    """Call once the process is ready to serve: moves what start-up made (modules, the app, its
    models) out of the collector's sight and lets it run less often. A request allocates hundreds
    of short-lived objects, so the default first-generation threshold (700) ran a collection
    every few requests; and a full collection walks everything not frozen, which holds the loop
    for tens of milliseconds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
