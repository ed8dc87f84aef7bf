"""normsearch's processes keep freed memory for reuse (normsearch.allocator), checked on the real glibc: an
activation-sized tensor is mapped fresh from the kernel in a plain process and comes from the heap after
``keep_freed_memory``."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import ctypes, ctypes.util, json, sys
import torch
from normsearch.allocator import keep_freed_memory

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Mallinfo2

def mapped_bytes(numel):
    before = libc.mallinfo2().hblkhd
    t = torch.empty(numel)
    after = libc.mallinfo2().hblkhd
    del t
    return after - before

tuned = keep_freed_memory() if sys.argv[1] == "tuned" else None
print(json.dumps({"tuned": tuned, "mapped": [mapped_bytes(n) for n in (2 << 20, 6 << 20)]}))
"""


def _mapped(mode: str) -> dict:
    command = [sys.executable, "-c", PROBE, mode]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_activation_sized_tensors_come_from_the_heap_once_freed_memory_is_kept() -> None:
    plain, tuned = _mapped("plain"), _mapped("tuned")
    assert plain["mapped"][0] >= 8 << 20  # glibc's default: an 8 MiB tensor is fresh pages from the kernel
    assert tuned["tuned"] is True and tuned["mapped"] == [0, 0]  # 8 and 24 MiB: reused heap memory
