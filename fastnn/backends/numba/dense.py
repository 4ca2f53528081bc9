"""Fully connected layer with Numba: BLAS for the products, a fused loop for bias and db.
Mirrors fastnn/backends/numpy/dense.py.

np.dot inside njit calls the same BLAS sgemm NumPy would; what Numba adds is writing the
bias into the product in place (no second (N, M) array) and the column sum for db.
"""
import numpy as np
from numba import njit

from ._common import FAST, f32


@njit(cache=True, fastmath=FAST)
def _forward(x, W, b):
    # x (N, D), W (D, M), b (M,) -> y (N, M)
    # y = x @ W + b
    y = np.dot(x, W)
    for n in range(y.shape[0]):
        for m in range(y.shape[1]):
            y[n, m] += b[m]
    return y


@njit(cache=True, fastmath=FAST)
def _backward(dy, x, W):
    # dy (N, M), x (N, D), W (D, M) -> dx (N, D), dW (D, M), db (M,)
    # dx = dy @ W.T; dW = x.T @ dy
    dx = np.dot(dy, W.T)
    dW = np.dot(x.T, dy)
    # db = dy.sum(axis=0)
    db = np.zeros(dy.shape[1], np.float32)
    for n in range(dy.shape[0]):
        for m in range(dy.shape[1]):
            db[m] += dy[n, m]
    return dx, dW, db


def dense_forward(x, W, b):
    # x (N, D), W (D, M), b (M,) -> y (N, M)
    return _forward(f32(x), f32(W), f32(b))


def dense_backward(dy, x, W):
    # dy (N, M) -> dx (N, D), dW (D, M), db (M,)
    return _backward(f32(dy), f32(x), f32(W))
