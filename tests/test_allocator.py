"""fastnn.memory: large arrays come from the heap and freed ones stay for the next step."""
import ctypes
import ctypes.util

import numpy as np
import pytest

from fastnn import backends, memory


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def mallinfo():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2) to see where blocks come from")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2()


def test_a_step_sized_array_comes_from_the_kept_heap():
    backends.load("numpy")  # loading a CPU backend applies it
    if not memory.keep_freed_memory():
        pytest.skip("not glibc: nothing to tune")
    before = mallinfo()
    a = np.ones(4 << 20, np.float32)  # 16 MB: glibc's default would mmap it and unmap it on free
    during = mallinfo()
    assert during.hblkhd == before.hblkhd  # not mmapped ...
    del a
    after = mallinfo()
    assert after.arena >= during.arena - (1 << 20)  # ... and freeing it keeps the heap for the next step
