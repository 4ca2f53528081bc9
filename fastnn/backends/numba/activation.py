"""Element-wise activations and inverted dropout with Numba. Mirrors fastnn/backends/numpy/activation.py.

Each kernel is one parallel pass over the flattened array (the reference makes temporaries:
``dy * (y > 0)`` is two passes and a boolean array). Backward passes take the forward output y.
"""
import numpy as np
from numba import njit, prange

from ..numpy import activation as reference
from ._common import FAST, PRANGE, f32, relu


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _relu(y, x):
    # y = np.maximum(x, 0)
    for i in prange(x.size):
        y[i] = relu(x[i])


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _relu_backward(dx, dy, y):
    # dx = dy * (y > 0)   (a product, as in the reference: an infinite dy where y <= 0 gives NaN)
    for i in prange(dy.size):
        dx[i] = dy[i] * np.float32(y[i] > 0)


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _sigmoid(y, x):
    # y = 0.5 * (1 + np.tanh(0.5 * x))
    for i in prange(x.size):
        y[i] = np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * x[i]))


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _sigmoid_backward(dx, dy, y):
    # dx = dy * y * (1 - y)
    for i in prange(dy.size):
        dx[i] = dy[i] * y[i] * (np.float32(1.0) - y[i])


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _tanh(y, x):
    # y = np.tanh(x)
    for i in prange(x.size):
        y[i] = np.tanh(x[i])


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _tanh_backward(dx, dy, y):
    # dx = dy * (1 - y * y)
    for i in prange(dy.size):
        dx[i] = dy[i] * (np.float32(1.0) - y[i] * y[i])


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _multiply(out, a, b):
    # out = a * b
    for i in prange(a.size):
        out[i] = a[i] * b[i]


def _unary(kernel, x):
    # x (any shape) -> y like x
    x = f32(x)
    y = np.empty_like(x)
    kernel(y.reshape(-1), x.reshape(-1))
    return y


def _binary(kernel, a, b):
    # a, b (same shape) -> out like a
    a, b = f32(a), f32(b)
    out = np.empty_like(a)
    kernel(out.reshape(-1), a.reshape(-1), b.reshape(-1))
    return out


def relu_forward(x):
    return _unary(_relu, x)


def relu_backward(dy, y):
    return _binary(_relu_backward, dy, y)


def sigmoid_forward(x):
    return _unary(_sigmoid, x)


def sigmoid_backward(dy, y):
    return _binary(_sigmoid_backward, dy, y)


def tanh_forward(x):
    return _unary(_tanh, x)


def tanh_backward(dy, y):
    return _binary(_tanh_backward, dy, y)


dropout_mask = reference.dropout_mask  # nothing faster: the numpy Generator draws the bits


def dropout_forward(x, mask):
    # y = x * mask
    return _binary(_multiply, x, mask)


def dropout_backward(dy, mask):
    # dx = dy * mask
    return _binary(_multiply, dy, mask)
