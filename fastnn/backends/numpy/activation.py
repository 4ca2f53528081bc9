"""Element-wise activations and inverted dropout. Backward passes take the forward output y."""
import numpy as np


def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(dy, y):
    # dx = dy where the unit was active (a fresh array: dy is left alone)
    return dy * (y > 0)


def sigmoid_forward(x):
    # 1 / (1 + exp(-x)) written through tanh, which cannot overflow
    return 0.5 * (1 + np.tanh(0.5 * x))


def sigmoid_backward(dy, y):
    return dy * y * (1 - y)


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(dy, y):
    return dy * (1 - y * y)


def dropout_mask(shape, p, rng):
    # keep each unit with probability 1 - p and scale it by 1 / (1 - p)
    keep = rng.random(shape, dtype=np.float32) >= p
    return keep * np.float32(1.0 / (1.0 - p))


def dropout_forward(x, mask):
    return x * mask


def dropout_backward(dy, mask):
    return dy * mask
