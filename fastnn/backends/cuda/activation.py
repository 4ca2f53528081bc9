"""Element-wise activations and inverted dropout. Mirrors fastnn/backends/numpy/activation.py.

Grid-stride loops over the flat view of contiguous device arrays. Backward passes take the
forward output y, as in the reference. A dropout mask is drawn on the device when the
generator is this backend's own (``rng.Generator``, xoroshiro128p: what the Trainer uses, so a
training step copies nothing); with a NumPy Generator it is drawn on the host by the reference
(exactly its mask for the same generator state) and copied up: one host->device copy of N*D floats.
"""
import math

import numpy as np
from numba import cuda, float32

from ..numpy import activation as reference
from .arrays import empty, flat, launch, require_device, to_device
from .rng import Generator

HALF = np.float32(0.5)
ONE = np.float32(1.0)
ZERO = np.float32(0.0)


@cuda.jit
def relu_forward_kernel(y, x):
    # x, y (n,) flat: y = np.maximum(x, 0)
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] = float32(0.0) if x[i] < 0 else x[i]   # a NaN passes through, as in np.maximum


@cuda.jit
def relu_backward_kernel(dx, dy, y):
    # dy, y, dx (n,) flat: dx = dy * (y > 0)
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        dx[i] = dy[i] * (ONE if y[i] > 0 else ZERO)


@cuda.jit
def sigmoid_forward_kernel(y, x):
    # x, y (n,) flat: y = 0.5 * (1 + np.tanh(0.5 * x))  (the sigmoid through tanh, which cannot overflow)
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] = HALF * (ONE + math.tanh(HALF * x[i]))


@cuda.jit
def sigmoid_backward_kernel(dx, dy, y):
    # dy, y, dx (n,) flat: dx = dy * y * (1 - y)
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        dx[i] = dy[i] * y[i] * (ONE - y[i])


@cuda.jit
def tanh_forward_kernel(y, x):
    # x, y (n,) flat: y = np.tanh(x)
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] = math.tanh(x[i])


@cuda.jit
def tanh_backward_kernel(dx, dy, y):
    # dy, y, dx (n,) flat: dx = dy * (1 - y * y)
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        dx[i] = dy[i] * (ONE - y[i] * y[i])


@cuda.jit
def multiply_kernel(out, a, b):
    # a, b, out (n,) flat: out = a * b  (dropout: the mask is 0 or 1 / (1 - p))
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = a[i] * b[i]


def _unary(kernel, name, x):
    require_device(name, x=x)
    y = empty(x.shape)
    kernel[launch(x.size)](flat(y), flat(x))
    return y


def _binary(kernel, name, a, b, names):
    require_device(name, **{names[0]: a, names[1]: b})
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"cuda {name}: shapes differ, {tuple(a.shape)} and {tuple(b.shape)}")
    out = empty(a.shape)
    kernel[launch(a.size)](flat(out), flat(a), flat(b))
    return out


def relu_forward(x):
    return _unary(relu_forward_kernel, "relu_forward", x)


def relu_backward(dy, y):
    return _binary(relu_backward_kernel, "relu_backward", dy, y, ("dy", "y"))


def sigmoid_forward(x):
    return _unary(sigmoid_forward_kernel, "sigmoid_forward", x)


def sigmoid_backward(dy, y):
    return _binary(sigmoid_backward_kernel, "sigmoid_backward", dy, y, ("dy", "y"))


def tanh_forward(x):
    return _unary(tanh_forward_kernel, "tanh_forward", x)


def tanh_backward(dy, y):
    return _binary(tanh_backward_kernel, "tanh_backward", dy, y, ("dy", "y"))


def dropout_mask(shape, p, rng):
    # keep each unit with probability 1 - p and scale it by 1 / (1 - p): drawn on the device by
    # a cuda Generator; with a NumPy Generator, drawn on the host by the reference (same Generator,
    # same mask) and copied to the device
    if isinstance(rng, Generator):
        return rng.dropout_mask(shape, p)
    return to_device(reference.dropout_mask(shape, p, rng))


def dropout_forward(x, mask):
    # y = x * mask
    return _binary(multiply_kernel, "dropout_forward", x, mask, ("x", "mask"))


def dropout_backward(dy, mask):
    # dx = dy * mask
    return _binary(multiply_kernel, "dropout_backward", dy, mask, ("dy", "mask"))
