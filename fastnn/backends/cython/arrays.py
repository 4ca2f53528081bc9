"""Array movement for the CPU, and the mini-batch gather. Mirrors ../numpy/arrays.py."""
import numpy as np

from fastnn_ext import _arrays

from ..numpy import arrays as reference

# The data already lives in host memory: moving it and allocating zeros is not a loop
# that compiling could speed up, so these are the reference's own functions.
to_device = reference.to_device
to_host = reference.to_host
zeros = reference.zeros


def gather(x, indices):
    # x (N, ...), indices int (B,) -> x[indices] (B, ...), a fresh contiguous batch
    x = np.ascontiguousarray(x)
    indices = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
    out = np.empty((len(indices),) + x.shape[1:], dtype=x.dtype)
    row_bytes = x.itemsize * int(np.prod(x.shape[1:], dtype=np.int64))
    _arrays.gather(out.view(np.uint8).reshape(len(indices), row_bytes),
                   x.view(np.uint8).reshape(len(x), row_bytes), indices)
    return out
