"""Element-wise activations and inverted dropout. Mirrors fastnn/backends/numpy/activation.py.

Every kernel sees its arrays flattened to 1-D (the adapter reshapes) and runs one
``prange``; backward passes take the forward output y, as in the reference.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastnn_ext._common cimport FASTNN_OPENMP, ftanh, relu, threads_for

OPENMP = bool(FASTNN_OPENMP)  # compiled with OpenMP; False: the serial build (_omp_shim.h)


def relu_forward(floating[::1] y, const floating[::1] x):
    # y = np.maximum(x, 0)   (NaN stays NaN: _common.relu)
    cdef Py_ssize_t n = x.shape[0], i
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        y[i] = relu(x[i])


def relu_backward(floating[::1] dx, const floating[::1] dy, const floating[::1] y):
    # dx = dy * (y > 0)
    cdef Py_ssize_t n = dy.shape[0], i
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        # a product, not a branch: no mispredictions, it vectorises, and an infinite dy where y <= 0
        # gives NaN (inf * 0), as in the reference
        dx[i] = dy[i] * (y[i] > 0)


def sigmoid_forward(floating[::1] y, const floating[::1] x):
    # y = 0.5 * (1 + np.tanh(0.5 * x))   (1 / (1 + exp(-x)) without overflow)
    cdef Py_ssize_t n = x.shape[0], i
    for i in prange(n, nogil=True, num_threads=threads_for(8 * n), schedule="static"):
        y[i] = <floating> 0.5 * (1 + ftanh(<floating> 0.5 * x[i]))


def sigmoid_backward(floating[::1] dx, const floating[::1] dy, const floating[::1] y):
    # dx = dy * y * (1 - y)
    cdef Py_ssize_t n = dy.shape[0], i
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        dx[i] = dy[i] * y[i] * (1 - y[i])


def tanh_forward(floating[::1] y, const floating[::1] x):
    # y = np.tanh(x)
    cdef Py_ssize_t n = x.shape[0], i
    for i in prange(n, nogil=True, num_threads=threads_for(8 * n), schedule="static"):
        y[i] = ftanh(x[i])


def tanh_backward(floating[::1] dx, const floating[::1] dy, const floating[::1] y):
    # dx = dy * (1 - y * y)
    cdef Py_ssize_t n = dy.shape[0], i
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        dx[i] = dy[i] * (1 - y[i] * y[i])


def dropout_mask(float[::1] mask, const float[::1] u, double p):
    # mask = (u >= p) * np.float32(1 / (1 - p)), u uniform in [0, 1) from the caller's rng
    cdef Py_ssize_t n = u.shape[0], i
    cdef float keep = <float> (1.0 / (1.0 - p)) if p < 1 else 0
    cdef float threshold = <float> p
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        mask[i] = keep if u[i] >= threshold else 0


def scale(floating[::1] y, const floating[::1] x, const floating[::1] mask):
    # y = x * mask   (dropout forward; dropout backward is the same with dy)
    cdef Py_ssize_t n = x.shape[0], i
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        y[i] = x[i] * mask[i]
