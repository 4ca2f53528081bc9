"""Device memory for the CUDA backend: host <-> device copies, zeros, gather, launch sizes.

Mirrors fastnn/backends/numpy/arrays.py, where the "device" is host memory and these
are (nearly) the identity. Here every array a kernel takes or returns is a Numba
device array; only ``to_host`` (and the scalar results of the losses and of
count_correct) copy anything back.

Also here, shared by the other modules: the launch sizes, ``require_device`` (a kernel
given a host array says so instead of silently copying it back and forth), and
``block_sum``, the shared-memory tree reduction used by the losses and batchnorm.

Memory: ``empty`` hands out device arrays from a pool, keyed by shape and dtype. An array
goes back to the pool by itself once nothing refers to it any more, neither the array nor a
view of it (a reshape or a slice), as with PyTorch's caching allocator: a training step asks
for the same shapes every time, so after the first step it allocates nothing, and a layer
that keeps its output until the next step simply gets a second buffer. Kernels queue on one
stream, so a buffer handed out again is only written after every earlier kernel that read it.
``pool_stats`` counts allocations; ``free_pool`` lets go of the idle buffers.

Element-wise kernels walk their arrays in grid-stride loops (``for i in range(cuda.grid(1),
n, cuda.gridsize(1))``) launched on ``launch(n)``: on a GPU one thread per element, up
to GRID_LIMIT blocks; in the simulator, where every thread is a Python thread that costs
far more than its work, a couple of small blocks do it all.
"""
import math
import sys
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

# Threads per block of the 1-D (element-wise) kernels, and the most blocks a grid-stride
# launch gets. The simulator runs each thread as a Python thread (about 0.3 ms to start,
# against 1-2 us per element of work): two blocks of 16 threads, which still exercise the
# grid-stride loops across blocks; tests run the GPU's sizes on small arrays.
THREADS = 16 if SIMULATOR else 256
GRID_LIMIT = 2 if SIMULATOR else 4096
# Threads per block of the reduction kernels (a power of two). The simulator runs every
# thread as a Python thread and pays for each cuda.syncthreads(), so it gets small blocks:
# the same code, fewer tree levels.
REDUCE_THREADS = 16 if SIMULATOR else 256

if SIMULATOR:  # and its barriers made cheaper: see simulator.py
    from .simulator import speed_up
    speed_up()


def blocks(n, threads=None):
    """Enough blocks of ``threads`` (default THREADS) threads to give each of n items a thread."""
    threads = THREADS if threads is None else threads
    return max(1, (n + threads - 1) // threads)


def launch(n):
    """(blocks, threads) for a grid-stride kernel over n items: ``kernel[launch(n)](...)``.
    Read at every launch, so that a test can set the GPU's sizes in the simulator."""
    return min(blocks(n), GRID_LIMIT), THREADS


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


# ------------------------------------------------------------------------- the memory pool

_POOL = {}           # (shape, dtype) -> [[device array, its references when idle], ...]
_STATS = {"allocations": 0, "bytes": 0}


def _references(a):
    """Who holds device array ``a`` and its memory: Python references to the array, to the memory
    object its views share (a reshape or a slice of a simulator array refers to the NumPy array it
    wraps; on a GPU a reshape shares ``gpu_data``), and numba's own count of slices of that memory."""
    memory = a._ary if SIMULATOR else a.gpu_data
    return sys.getrefcount(a), sys.getrefcount(memory), getattr(memory, "refct", 0)


def empty(shape, dtype=np.float32):
    """An uninitialised device array (every element is written by the kernel that fills it),
    from the pool: an idle array of this shape and dtype when there is one, else a new one."""
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
    dtype = np.dtype(dtype)
    entries = _POOL.setdefault((shape, dtype.str), [])
    for entry in entries:
        if _references(entry[0]) == entry[1]:   # only the pool holds it: nobody reads it any more
            return entry[0]
    entry = [cuda.device_array(shape, dtype=dtype), None]
    entries.append(entry)
    entry[1] = _references(entry[0])             # measured as the loop above measures
    _STATS["allocations"] += 1
    _STATS["bytes"] += entry[0].size * dtype.itemsize
    return entry[0]


def pool_stats():
    """{"allocations": device arrays the pool has made, "bytes": their size, "held": arrays it
    holds, "idle": those nobody else refers to now}."""
    entries = [entry for group in _POOL.values() for entry in group]
    idle = sum(_references(entry[0]) == entry[1] for entry in entries)
    return dict(_STATS, held=len(entries), idle=idle)


def free_pool():
    """Drop the pool's idle arrays (numba frees their memory); arrays in use stay."""
    for key, entries in list(_POOL.items()):
        entries[:] = [entry for entry in entries if _references(entry[0]) != entry[1]]
        if not entries:
            del _POOL[key]


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
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = value


@cuda.jit
def gather_kernel(out, x, indices):
    # x (N, R), indices (B,) int64 -> out (B, R): out = x[indices]
    row_len = out.shape[1]
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        b, j = i // row_len, i % row_len
        out[b, j] = x[indices[b], j]


@cuda.jit
def nonfinite_kernel(flags, slot, x):
    # x (n,) flat float: flags[slot] = 1 if any element is NaN or infinite (flags[slot] was 0)
    # NumPy: flags[slot] = not np.isfinite(x).all()   (every thread that finds one writes the same 1)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        if math.isnan(x[i]) or math.isinf(x[i]):
            flags[slot] = 1


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
    """A device array of zeros (from the pool, filled on the device)."""
    out = empty(shape, dtype)
    if out.size:
        fill_kernel[launch(out.size)](flat(out), out.dtype.type(0))
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
        gather_kernel[launch(out.size)](out.reshape(count, row_len), x.reshape(n, row_len), idx)
    return out


def nonfinite(arrays):
    """For each device array in ``arrays``, whether it holds a NaN or an infinity (a host bool
    array): the Trainer's finite check, which so copies back one int per array, not the arrays."""
    flags = zeros(len(arrays), np.int32)
    for slot, x in enumerate(arrays):
        require_device("nonfinite", x=x)
        if x.size:
            nonfinite_kernel[launch(x.size)](flags, slot, flat(x))
    return flags.copy_to_host() != 0 if len(arrays) else np.zeros(0, bool)
