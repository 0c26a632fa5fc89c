"""worker/allocator.py: glibc keeps a worker's freed buffers for the next step."""

import ctypes
import ctypes.util
import platform

import pytest

from worker.allocator import keep_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_memory_stops_large_blocks_from_being_unmapped():
    assert keep_memory() is True
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = type("MallInfo2", (ctypes.Structure,), {"_fields_": [
        (name, ctypes.c_size_t) for name in
        ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]})
    before = libc.mallinfo2().hblks
    block = libc.malloc(8 << 20)  # 8 MiB: glibc would mmap it under its default 128 KiB threshold
    try:
        assert libc.mallinfo2().hblks == before  # served from the heap, not a fresh mapping
    finally:
        libc.free(block)
