"""Device memory for the CUDA backend: host <-> device copies, zeros, gather, launch sizes.

Mirrors fastnn/backends/numpy/arrays.py, where the "device" is host memory and these
are (nearly) the identity. Here every array a kernel takes or returns is a Numba
device array; only ``to_host`` (and the scalar results of the losses and of
count_correct) copy anything back.

Also here, shared by the other modules: the launch sizes, ``require_device`` (a kernel
given a host array says so instead of silently copying it back and forth), and
``block_sum``, the shared-memory tree reduction used by the losses and batchnorm.
"""
import warnings

import numba
import numpy as np
from numba import cuda

from ...errors import ShapeError

# The losses reduce in a single block on purpose, and MNIST-sized layers launch grids of
# fewer than 128 blocks: Numba's low-occupancy hint would fire on every such launch.
warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU under-utilization")

# True when Numba runs the kernels in its CUDA simulator (NUMBA_ENABLE_CUDASIM=1).
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

THREADS = 256         # threads per block of the 1-D (element-wise) kernels
# Threads per block of the reduction kernels (a power of two). The simulator runs every
# thread as a Python thread and pays for each cuda.syncthreads(), so it gets small blocks:
# the same code, fewer tree levels.
REDUCE_THREADS = 32 if SIMULATOR else 256


def blocks(n, threads=THREADS):
    """Enough blocks of ``threads`` threads to give each of n items a thread."""
    return max(1, (n + threads - 1) // threads)


def is_device(x):
    """True for a Numba device array (a simulator array under NUMBA_ENABLE_CUDASIM)."""
    return bool(getattr(x, "__cuda_ndarray__", False))


def require_device(kernel, **arrays):
    """Raise ShapeError naming the argument if a host array reached a device kernel."""
    for name, x in arrays.items():
        if not is_device(x):
            raise ShapeError(
                f"cuda backend: {kernel} got a {type(x).__name__} for {name!r}, not a device array; "
                f"move host data with K.to_device(...) first (the cuda kernels never copy implicitly)")


def flat(x):
    """The same device memory as a 1-D array (x must be contiguous, as every array here is)."""
    return x.reshape(x.size)


def empty(shape, dtype=np.float32):
    """An uninitialised device array (every element is written by the kernel that fills it)."""
    return cuda.device_array(shape, dtype=dtype)


def synchronize():
    """Wait for every launched kernel to finish. Kernel launches return at once: time with this."""
    cuda.synchronize()


# ---------------------------------------------------------------------------- reductions

@cuda.jit(device=True)
def block_sum(shared, value):
    """The sum of ``value`` over the threads of a 1-D block; every thread gets it back.

    ``shared`` is a shared array of blockDim.x elements (a power of two). Every thread of
    the block must call this (it synchronises). Tree reduction: log2(blockDim.x) steps.
    """
    t = cuda.threadIdx.x
    shared[t] = value
    cuda.syncthreads()
    step = cuda.blockDim.x // 2
    while step > 0:
        if t < step:
            shared[t] += shared[t + step]
        cuda.syncthreads()
        step //= 2
    total = shared[0]
    cuda.syncthreads()  # nobody writes shared again before everyone has read the total
    return total


# ---------------------------------------------------------------------------------- kernels

@cuda.jit
def fill_kernel(out, value):
    # out (n,): out[:] = value
    i = cuda.grid(1)
    if i < out.size:
        out[i] = value


@cuda.jit
def gather_kernel(out, x, indices):
    # x (N, R), indices (B,) int64 -> out (B, R): out = x[indices]
    i = cuda.grid(1)
    if i < out.size:
        row_len = out.shape[1]
        b, j = i // row_len, i % row_len
        out[b, j] = x[indices[b], j]


# ----------------------------------------------------------------------------- launchers

def to_device(x):
    """A device copy of host array ``x``: floats become float32, integers int64, C order.

    A device array is handed back as it is.
    """
    if is_device(x):
        return x
    x = np.asarray(x)
    if x.dtype.kind == "f":
        dtype = np.float32
    elif x.dtype.kind in "iu":
        dtype = np.int64
    else:
        raise ShapeError(f"cuda backend: to_device takes float or integer arrays, not {x.dtype}")
    return cuda.to_device(np.ascontiguousarray(x, dtype=dtype))


def to_host(x):
    """A host NumPy copy of device array ``x`` (a host array is returned as it is)."""
    return x.copy_to_host() if is_device(x) else np.asarray(x)


def zeros(shape, dtype=np.float32):
    out = empty(shape, dtype)
    if out.size:
        fill_kernel[blocks(out.size), THREADS](flat(out), out.dtype.type(0))
    return out


def gather(x, indices):
    """x[indices] along axis 0 as a fresh device array; ``indices`` host or device int64."""
    require_device("gather", x=x)
    n = x.shape[0]
    if is_device(indices):
        idx = indices  # already checked by whoever put it there
    else:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"cuda backend: gather index out of range for {n} rows")
        idx = cuda.to_device(np.where(idx < 0, idx + n, idx))
    count = idx.shape[0]
    out = empty((count,) + tuple(x.shape[1:]), x.dtype)
    row_len = int(np.prod(x.shape[1:], dtype=np.int64))
    if out.size:
        gather_kernel[blocks(out.size), THREADS](out.reshape(count, row_len), x.reshape(n, row_len), idx)
    return out
