"""What every numba kernel module shares: the fastmath flags, float32 inputs, scratch buffers.

FAST is the subset of LLVM fast-math that is safe here: reassociation (so reductions
vectorise), contraction into FMA, approximate functions. It leaves out ``nnan``/``ninf``:
max-pooling pads with -inf, the tests feed saturating inputs, and a NaN must reach the loss
(so that training stops) exactly as it does in the reference: NaN and infinities are real.
"""
import collections

import numpy as np
from numba import njit
from numba.core.cpu_options import ParallelOptions

FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}

# parallel=PRANGE: only the prange loops become parallel regions. Numba's other conversions (array
# expressions, slice assignments, reductions) would each add a parallel region of their own, a
# gufunc with its wrappers compiled for every one of them, where the kernels want one region
# per call (and none inside a prange loop). A ParallelOptions, not a dict: Numba pops a dict's keys.
PRANGE = ParallelOptions({"comprehension": False, "reduction": False, "inplace_binop": False, "setitem": False,
                          "numpy": False, "stencil": False, "fusion": False, "prange": True})

SCRATCH_BYTES = 64 << 20  # the most scratch kept between calls; the oldest buffers go first
_scratch = collections.OrderedDict()


# float32 zero: a float64 0.0 in a float32 loop converts every element and stops vectorisation
ZERO = np.float32(0.0)


@njit(cache=True, fastmath=FAST)
def relu(v):
    # np.maximum(v, 0) for one value: NaN stays NaN and -inf becomes 0, as in the reference
    # (max(v, 0) and ``v if v > 0 else 0`` both turn NaN into 0, and a NaN weight would vanish)
    return v if not v <= ZERO else ZERO


@njit(cache=True)
def beats(v, best):
    # whether v takes over from best as a window's maximum, in np.argmax's order: the first NaN
    # wins, otherwise only a strictly larger value (ties go to the first). & and | keep it
    # branch-free, so it compiles to selects.
    return (v > best) | ((v != v) & (best == best))


@njit(cache=True, fastmath=FAST)
def has_nan(a, lo, hi):
    # np.isnan(a[lo:hi]).any() for flat a, as one sum (NaN in, NaN out) that vectorises under
    # reassociation; inf - inf also says yes, which costs only an exact second pass. Kernels
    # whose NaN-aware comparisons would be slow run the plain ones and ask this afterwards.
    total = ZERO
    for j in range(lo, hi):
        total += a[j]
    return total != total


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
