"""What every numba kernel module shares: the fastmath flags, float32 inputs, scratch buffers.

FAST is the subset of LLVM fast-math that is safe here: reassociation (so reductions
vectorise), contraction into FMA, approximate functions. It leaves out ``nnan``/``ninf``:
max-pooling pads with -inf and the tests feed saturating inputs, so infinities are real.
"""
import numpy as np

FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}

_scratch = {}


def f32(a):
    """``a`` as a C-contiguous float32 array (no copy when it already is one)."""
    return np.ascontiguousarray(a, dtype=np.float32)


def scratch(tag, shape):
    """An internal float32 work buffer, reused by every call that asks for the same tag and shape.

    Only for memory a kernel fills and consumes within one call (im2col columns, gradients
    of the columns): never for an array that is returned or kept in a cache.
    """
    key = (tag, tuple(shape))
    buf = _scratch.get(key)
    if buf is None:
        buf = _scratch[key] = np.empty(shape, np.float32)
    return buf
