"""Keep the memory a training step frees, for the next step to reuse.

Every step allocates the same large arrays again (activations, gradients: 1-7 MB each for the
MNIST nets) and frees them by the end of it. glibc's malloc serves blocks from 128 KB up (the
limit adapts) with fresh mmap pages and hands freed memory back to the kernel, so each step
pays a page fault per 4 KB on first touch: on this project's machine (a VM) that was 1.5 ms of
a 2.4 ms fused convolution's 3.4 MB of outputs. With higher limits the blocks come from the
heap and stay there between steps (the process keeps its peak size instead of shrinking;
PyTorch avoids the same cost with its own caching allocator).

Called when a CPU backend loads (fastnn/backends/__init__.py); a no-op where libc is not glibc.
"""
import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 256 << 20  # blocks below this come from the heap
TRIM_THRESHOLD = 512 << 20  # free heap kept at the top before any goes back to the kernel

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once); True if it applied."""
    global _done
    if not _done:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
                bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
            _done = False
    return _done
