"""Fully connected layer with Numba: sgemm for the products, split over Numba's threads.
Mirrors fastnn/backends/numpy/dense.py.

BLAS runs single-threaded under the compiled backends (fastnn/threads.py), so each product is
cut into one block of rows per thread, every block a single-threaded sgemm
(fastnn/backends/numba/blas.py): one parallel region per call, and no second thread pool
competing with Numba's for the cores. The bias is written into the output before the product
accumulates onto it (no second (N, M) array); db is a column sum.
"""
import numba
import numpy as np
from numba import njit, prange

from ._common import FAST, f32
from .blas import gemm


@njit(cache=True, fastmath=FAST)
def forward_block(y, x, W, b, lo, hi, relu):
    # rows lo:hi of y = x @ W + b, then relu(y) if asked, while the rows are in cache
    for n in range(lo, hi):
        y[n, :] = b
    gemm(y[lo:hi], x[lo:hi], W, 1.0, 1.0)  # an empty block is skipped
    if relu:
        for n in range(lo, hi):
            for m in range(y.shape[1]):
                y[n, m] = max(y[n, m], 0.0)


@njit(cache=True, fastmath=FAST)
def backward_block(dx, dW, db, dy, x, W, t, T, need_dx):
    # block t of T of each product: rows of dx, rows of dW, entries of db
    N, D = x.shape
    M = dy.shape[1]
    if need_dx:
        # dx[lo:hi] = dy[lo:hi] @ W.T
        lo, hi = t * N // T, (t + 1) * N // T
        gemm(dx[lo:hi], dy[lo:hi], W, 1.0, 0.0, False, True)
    # dW[lo:hi] = x[:, lo:hi].T @ dy
    lo, hi = t * D // T, (t + 1) * D // T
    gemm(dW[lo:hi], x[:, lo:hi], dy, 1.0, 0.0, True, False)
    # db[lo:hi] = dy[:, lo:hi].sum(axis=0)
    lo, hi = t * M // T, (t + 1) * M // T
    db[lo:hi] = 0.0
    for n in range(N):
        for m in range(lo, hi):
            db[m] += dy[n, m]


@njit(cache=True, parallel=True, fastmath=FAST)
def _forward(y, x, W, b, T):
    # x (N, D), W (D, M), b (M,) -> y (N, M); T blocks of rows
    N = x.shape[0]
    for t in prange(T):
        forward_block(y, x, W, b, t * N // T, (t + 1) * N // T, False)


@njit(cache=True, parallel=True, fastmath=FAST)
def _backward(dx, dW, db, dy, x, W, T, need_dx):
    # dy (N, M), x (N, D), W (D, M) -> dx (N, D) (if need_dx), dW (D, M), db (M,); T blocks of each
    for t in prange(T):
        backward_block(dx, dW, db, dy, x, W, t, T, need_dx)


def dense_forward(x, W, b):
    # x (N, D), W (D, M), b (M,) -> y (N, M)
    x, W, b = f32(x), f32(W), f32(b)
    y = np.empty((x.shape[0], W.shape[1]), np.float32)
    _forward(y, x, W, b, numba.get_num_threads())  # a block may be empty: gemm skips it
    return y


def dense_backward(dy, x, W, need_dx=True):
    # dy (N, M) -> dx (N, D) or None, dW (D, M), db (M,)
    dy, x, W = f32(dy), f32(x), f32(W)
    dx = np.empty_like(x) if need_dx else x  # x: an untouched stand-in of the right type
    dW, db = np.empty_like(W), np.empty(W.shape[1], np.float32)
    _backward(dx, dW, db, dy, x, W, numba.get_num_threads(), need_dx)
    return (dx if need_dx else None), dW, db
