"""What every numba kernel module shares: the fastmath flags, float32 inputs, scratch buffers.

FAST is the subset of LLVM fast-math that is safe here: reassociation (so reductions
vectorise), contraction into FMA, approximate functions. It leaves out ``nnan``/``ninf``:
max-pooling pads with -inf and the tests feed saturating inputs, so infinities are real.
"""
import collections

import numpy as np

FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}

SCRATCH_BYTES = 64 << 20  # the most scratch kept between calls; the oldest buffers go first
_scratch = collections.OrderedDict()


def f32(a):
    """``a`` as a C-contiguous float32 array (no copy when it already is one)."""
    return np.ascontiguousarray(a, dtype=np.float32)


def scratch(tag, shape):
    """An internal float32 work buffer, reused by every call that asks for the same tag and shape.

    Only for memory a kernel fills and consumes within one call (im2col columns, gradients
    of the columns): never for an array that is returned or kept in a cache. Kernels size
    scratch to their work unit (an image or a tile group per thread), never to the batch,
    and at most SCRATCH_BYTES stay allocated between calls, least recently used first out.
    """
    key = (tag, tuple(shape))
    buf = _scratch.pop(key, None)
    if buf is None:
        buf = np.empty(shape, np.float32)
    _scratch[key] = buf  # now the most recently used
    while len(_scratch) > 1 and sum(b.nbytes for b in _scratch.values()) > SCRATCH_BYTES:
        _scratch.popitem(last=False)
    return buf
