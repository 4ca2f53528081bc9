"""Argument preparation shared by the adapters: the compiled kernels take C-contiguous
float32 or float64 arrays of one dtype, and write only into arrays they are given."""
import math
import threading

import numpy as np

from ...errors import ShapeError


def floats(*arrays):
    """The arrays as C-contiguous copies (only where needed) of one float dtype:
    float64 if any of them is float64 (gradient checks), else float32."""
    dtype = np.float64 if any(np.asarray(a).dtype == np.float64 for a in arrays) else np.float32
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in arrays)


def flat_inplace(array, name):
    """A 1-D view of ``array`` that a kernel may update in place (writes reach ``array``)."""
    if not (isinstance(array, np.ndarray) and array.dtype in (np.float32, np.float64)
            and array.flags.c_contiguous and array.flags.writeable):
        raise ShapeError(f"the cython backend updates {name} in place, so it must be a writable "
                         f"C-contiguous float32 or float64 numpy array, not "
                         f"{type(array).__name__} {getattr(array, 'dtype', '')} "
                         f"{'(non-contiguous)' if isinstance(array, np.ndarray) else ''}".rstrip())
    return array.reshape(-1)


def flat_like(array, target, name):
    """``array`` (read only) as a contiguous 1-D array of ``target``'s dtype and size."""
    flat = np.ascontiguousarray(array, dtype=target.dtype).reshape(-1)
    if flat.shape != target.shape:
        raise ShapeError(f"{name} has {flat.size} elements, the parameter has {target.size}")
    return flat


# --- work arrays -------------------------------------------------------------------------
# Scratch (a thread's im2col columns, partial sums) costs more to allocate than to fill: a
# fresh large array is fresh pages, and the kernel would spend its time in page faults. So
# each role keeps one buffer, grown to the largest size asked for, and every call reuses it.
# The kernels size their scratch to one image per thread, never to the batch, so this stays
# small (about 1.3 MB for the largest MNIST layer) whatever the batch size.

_work = threading.local()


def work(role, shape, dtype):
    """A work array of ``shape`` for a temporary that does not outlive one kernel call: a view
    of the one buffer kept for ``role`` and ``dtype`` (per Python thread); contents are garbage.
    Two arrays used in the same call need different roles."""
    pool = _work.__dict__.setdefault("pool", {})
    key = (role, np.dtype(dtype))
    size = math.prod(shape)
    buffer = pool.get(key)
    if buffer is None or buffer.size < size:
        buffer = pool[key] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)
