"""The kept heap (runtime/memory.py): large tensors stay in the heap after they are freed, the
command line's own processes turn it on, ``TTT_KEEP_FREED_MEMORY=0`` and in-process callers
of ``cli.main`` do not.

Each check runs in a fresh interpreter, so the allocator settings of this test process stay
as they are and every check starts from glibc's defaults.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from TTTInterpolationLib.runtime.memory import _glibc

pytestmark = pytest.mark.skipif(_glibc() is None, reason="the kept heap needs glibc (Linux)")

# Bytes glibc holds in mmapped blocks (mallinfo2().hblkhd) around a freed 64 MiB tensor.
PROBE = textwrap.dedent("""
    import ctypes, json, sys
    import torch
    from TTTInterpolationLib.runtime.memory import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    took = keep_freed_memory(sys.argv[1] == "on")
    before = libc.mallinfo2()
    x = torch.ones(16 * 2**20)  # 64 MiB: above glibc's largest mmap threshold (32 MiB)
    during = libc.mallinfo2()
    del x
    after = libc.mallinfo2()
    print(json.dumps({"took": took, "mmapped": during.hblkhd - before.hblkhd,
                      "heap_grew": during.arena - before.arena,
                      "free_in_heap_after": after.fordblks}))
""")


def probe(setting: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


def test_a_freed_large_tensor_stays_in_the_heap_only_when_kept() -> None:
    kept, default = probe("on"), probe("off")
    assert kept["took"] and default["took"]
    mib = 2**20
    # Default glibc: the tensor is its own mapping, unmapped again on free.
    assert default["mmapped"] >= 64 * mib
    # Kept: it comes from the heap, and its memory is still there after the free.
    assert kept["mmapped"] < mib
    assert kept["heap_grew"] >= 64 * mib
    assert kept["free_in_heap_after"] >= 64 * mib


ENTRY = textwrap.dedent("""
    import sys
    from TTTInterpolationLib import cli
    from TTTInterpolationLib.runtime.memory import freed_memory_kept
    sys.argv = ["tttinterp", "--help"]
    try:
        cli.{entry}()
    except SystemExit:
        pass
    print("KEPT", freed_memory_kept())
""")


@pytest.mark.parametrize(("entry", "switch", "expected"), [
    ("run", None, True), ("run", "0", False), ("main", None, False)])
def test_the_command_lines_own_process_keeps_freed_memory(entry: str, switch: str | None,
                                                          expected: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TTT_KEEP_FREED_MEMORY"}
    if switch is not None:
        env["TTT_KEEP_FREED_MEMORY"] = switch
    out = subprocess.run([sys.executable, "-c", ENTRY.format(entry=entry)], capture_output=True,
                         text=True, check=True, env=env, timeout=120)
    assert f"KEPT {expected}" in out.stdout
