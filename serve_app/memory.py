"""Give memory back to the system after a model is dropped, and measure what is held."""
from __future__ import annotations

import ctypes
import gc
import os


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None


_LIBC = _libc()


def release_memory() -> None:
    """Collect garbage, return cached CUDA blocks, and give freed heap pages back.

    After ``del model; gc.collect()`` glibc keeps the freed pages, so RSS barely falls and
    grows over load/unload cycles; ``malloc_trim(0)`` returns them.
    """
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    except ImportError:
        pass
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cuda_memory_bytes() -> int | None:
    """Bytes the torch allocator holds on the current CUDA device, None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return int(torch.cuda.memory_reserved())
