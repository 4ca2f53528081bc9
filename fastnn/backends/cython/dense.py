"""Fully connected layer: y = x @ W + b. Mirrors ../numpy/dense.py via fastnn_ext/_dense.pyx."""
import numpy as np

from fastnn_ext import _dense

from ._prep import floats


def dense_forward(x, W, b):
    # x (N, D), W (D, M), b (M,) -> y (N, M)
    x, W, b = floats(x, W, b)
    y = np.empty((x.shape[0], W.shape[1]), dtype=x.dtype)
    _dense.dense_forward(y, x, W, b)
    return y


def dense_backward(dy, x, W, need_dx=True):
    # dy (N, M) -> dx (N, D) or None, dW (D, M), db (M,)
    dy, x, W = floats(dy, x, W)
    dx = np.empty_like(x) if need_dx else np.empty((0, 0), x.dtype)  # need_dx False: untouched
    dW, db = np.empty_like(W), np.empty(W.shape[1], dtype=W.dtype)
    _dense.dense_backward(dx, dW, db, dy, x, W, need_dx)
    return (dx if need_dx else None), dW, db
