"""Keeping freed memory in the process heap, so large tensors reuse it instead of fresh pages.

glibc's ``malloc`` serves every block above 32 MiB with its own ``mmap`` and unmaps it on
``free``. A 128x128x32 volume of 32 float32 channels is 64 MiB, so each full-resolution
activation of the networks gets fresh pages from the kernel, which the kernel must fault in and
zero on first touch, and then throws away. With mmap off and heap trimming off, a freed block
stays in the heap and the next tensor of that size takes it as it is. Measured with
``benchmarks/bench_speed.py`` (settings ``default`` and ``default-kept-heap``), see the README.

The cost: the process's resident memory does not shrink back after its peak until it exits.
That suits the processes that do the engine's heavy work and then end (``tttinterp`` and the
Slicer module's worker, which runs ``tttinterp``), so their entry point
:func:`TTTInterpolationLib.cli.run` turns it on; a long-lived host such as the Slicer GUI
process or a notebook keeps glibc's defaults unless it calls :func:`keep_freed_memory`.
``TTT_KEEP_FREED_MEMORY=0`` turns it off for the command line. Elsewhere than Linux with
glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

# mallopt parameters and glibc's defaults (malloc/malloc.c).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_INT_MAX = 2**31 - 1
#: Environment variable that turns :func:`keep_freed_memory` off for the command line ("0").
ENV_SWITCH = "TTT_KEEP_FREED_MEMORY"

_STATE = {"kept": False}


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The running process's C library when it is glibc (musl and others have no mallopt)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: raises AttributeError elsewhere
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory(enabled: bool = True) -> bool:
    """Turn the kept heap on (or back to glibc's default behaviour); True if it took effect.

    Off again means glibc's default values; their dynamic adjustment (which a program that
    never called ``mallopt`` has) does not come back.
    """
    libc = _glibc()
    if libc is None:
        return False
    mmap_max, trim = (0, _INT_MAX) if enabled else (_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
    ok = bool(libc.mallopt(_M_MMAP_MAX, mmap_max)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))
    if ok:
        _STATE["kept"] = enabled
    return ok


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` is on in this process."""
    return _STATE["kept"]


def keep_freed_memory_unless_disabled() -> bool:
    """:func:`keep_freed_memory` unless ``TTT_KEEP_FREED_MEMORY=0`` (the command line's choice)."""
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        return False
    return keep_freed_memory(True)


@contextmanager
def kept_heap(enabled: bool) -> Iterator[None]:
    """The kept heap on or off for a block, then as it was (for side-by-side measurements).

    ``mallopt`` is called only when the state changes, so a block that asks for what is
    already in force leaves glibc untouched (before any change, with its dynamic thresholds).
    """
    previous = freed_memory_kept()
    if enabled == previous:
        yield
        return
    keep_freed_memory(enabled)
    try:
        yield
    finally:
        keep_freed_memory(previous)
