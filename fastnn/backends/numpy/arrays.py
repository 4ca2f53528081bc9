"""Array movement for the CPU: the data already lives in host memory."""
import numpy as np


def to_device(x):
    # host memory is the device: hand back the array itself, contiguous
    return np.ascontiguousarray(x)


def to_host(x):
    return np.asarray(x)


def zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


def gather(x, indices):
    # x[indices] along axis 0: a fresh contiguous batch
    return np.take(x, indices, axis=0)
