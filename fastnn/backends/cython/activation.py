"""Element-wise activations and inverted dropout. Mirrors ../numpy/activation.py
via fastnn_ext/_activation.pyx. Backward passes take the forward output y."""
import numpy as np

from fastnn_ext import _activation

from ._prep import floats


def _unary(kernel, x):
    (x,) = floats(x)
    y = np.empty_like(x)
    kernel(y.reshape(-1), x.reshape(-1))
    return y


def _binary(kernel, a, b):
    a, b = floats(a, b)
    out = np.empty_like(a)
    kernel(out.reshape(-1), a.reshape(-1), b.reshape(-1))
    return out


def relu_forward(x):
    return _unary(_activation.relu_forward, x)


def relu_backward(dy, y):
    return _binary(_activation.relu_backward, dy, y)


def sigmoid_forward(x):
    return _unary(_activation.sigmoid_forward, x)


def sigmoid_backward(dy, y):
    return _binary(_activation.sigmoid_backward, dy, y)


def tanh_forward(x):
    return _unary(_activation.tanh_forward, x)


def tanh_backward(dy, y):
    return _binary(_activation.tanh_backward, dy, y)


def dropout_mask(shape, p, rng):
    # keep each unit with probability 1 - p and scale it by 1 / (1 - p); the uniform draws
    # come from the caller's numpy Generator, so a seed gives the reference's mask
    u = rng.random(shape, dtype=np.float32)
    _activation.dropout_mask(u.reshape(-1), u.reshape(-1), p)  # u is ours: turned into the mask
    return u


def dropout_forward(x, mask):
    # y = x * mask
    return _binary(_activation.scale, x, mask)


def dropout_backward(dy, mask):
    # dx = dy * mask
    return _binary(_activation.scale, dy, mask)
