"""Argument preparation shared by the adapters: the compiled kernels take C-contiguous
float32 or float64 arrays of one dtype, and write only into arrays they are given."""
import collections
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
# Big temporaries (im2col columns are tens of MB) cost more to allocate than to fill: the
# kernel would spend its time in page faults. So they are reused, in two ways.

_work = threading.local()
_WORK_KEEP = 8  # distinct work arrays kept per thread (batch sizes and layers vary)


def work(role, shape, dtype):
    """A work array for a temporary that does not outlive one kernel call, reused by the
    next call that asks for the same role, shape and dtype (contents are garbage)."""
    pool = _work.__dict__.setdefault("pool", collections.OrderedDict())
    key = (role, tuple(shape), np.dtype(dtype))
    array = pool.pop(key, None)
    if array is None:
        array = np.empty(shape, dtype=dtype)
    pool[key] = array
    while len(pool) > _WORK_KEEP:
        pool.popitem(last=False)
    return array


_spare = []      # arrays whose owner (a cache) has died, ready for reuse
_spare_lock = threading.Lock()
_SPARE_KEEP = 4


class Recycled:
    """Holds an array that a cache keeps between forward and backward (the im2col
    columns); when the cache is dropped (the layer's next forward replaces it), the array
    goes back to ``_spare`` for the next forward instead of to the allocator. An array is
    never reused while any cache still holds it."""

    __slots__ = ("array",)

    def __init__(self, shape, dtype):
        key = (tuple(shape), np.dtype(dtype))
        with _spare_lock:
            for i, spare in enumerate(_spare):
                if (spare.shape, spare.dtype) == key:
                    self.array = _spare.pop(i)
                    return
        self.array = np.empty(shape, dtype=dtype)

    def __del__(self):
        try:
            with _spare_lock:
                if len(_spare) < _SPARE_KEEP:
                    _spare.append(self.array)
        except Exception:  # interpreter shutdown: the module globals may be gone
            pass
