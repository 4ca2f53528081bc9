"""Fully connected layer with Numba: sgemm for the products, split over Numba's threads.
Mirrors fastnn/backends/numpy/dense.py.

BLAS runs single-threaded under the compiled backends (fastnn/threads.py), so each product is
cut into one block per thread, every block single-threaded sgemm calls
(fastnn/backends/numba/blas.py): one parallel region per call, and no second thread pool
competing with Numba's for the cores. Forward: a block of rows of y; the bias is written into
y before the product accumulates onto it (no second (N, M) array). Backward: a block of columns
of x (rows of W), for dW and dx both, in chunks that stay in L2 (column_chunk): each thread
reads only its part of W. Measured against the row split and against a one-pass backward (dx,
dW and db from one sweep over x's rows, per-thread dW partials) in
benchmarks/dense_backward_one_pass.py: the column split was 8-13% faster than the row split
at 1 thread and 11-32% at 2 on the nets' dense layers (level on 100x100); the one-pass sweep
was 1.3-1.7x slower than either (its dW partials and their sum cost more than it saves).
"""
import numba
import numpy as np
from numba import njit, prange

from ._common import FAST, PRANGE, f32, relu
from .blas import gemm


@njit(cache=True, fastmath=FAST)
def forward_block(y, x, W, b, lo, hi, with_relu):
    # rows lo:hi of y = x @ W + b, then np.maximum(y, 0) if asked, while the rows are in cache
    # y[lo:hi] = b, as a loop: an array assigned to a slice also compiles the code of its shape
    # error, Numba's string formatting (seconds of compile time for every kernel that has one)
    for n in range(lo, hi):
        for m in range(y.shape[1]):
            y[n, m] = b[m]
    gemm(y[lo:hi], x[lo:hi], W, 1.0, 1.0)  # an empty block is skipped
    if with_relu:
        for n in range(lo, hi):
            for m in range(y.shape[1]):
                y[n, m] = relu(y[n, m])


@njit(cache=True, fastmath=FAST)
def backward_block(dx, dW, db, dy, x, W, t, T, chunk, need_dx):
    # block t of T: columns lo:hi of x (rows of W), `chunk` at a time, and entries of db
    N, D = x.shape
    M = dy.shape[1]
    lo, hi = t * D // T, (t + 1) * D // T
    for d0 in range(lo, hi, chunk):
        d1 = min(d0 + chunk, hi)
        # dW[d0:d1] = x[:, d0:d1].T @ dy
        gemm(dW[d0:d1], x[:, d0:d1], dy, 1.0, 0.0, True, False)
        if need_dx:
            # dx[:, d0:d1] = dy @ W[d0:d1].T
            gemm(dx[:, d0:d1], dy, W[d0:d1], 1.0, 0.0, False, True)
    # db[lo:hi] = dy[:, lo:hi].sum(axis=0)
    lo, hi = t * M // T, (t + 1) * M // T
    db[lo:hi] = 0.0
    for n in range(N):
        for m in range(lo, hi):
            db[m] += dy[n, m]


def column_chunk(N, M, budget=128 << 10):
    """Columns of x per sgemm in backward: a chunk's x and dx (N x C) and W and dW (C x M) take
    about ``budget`` bytes, so they stay in L2 between the two products; a multiple of 16."""
    return max(16, budget // (8 * (N + M)) // 16 * 16)


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _forward(y, x, W, b, T):
    # x (N, D), W (D, M), b (M,) -> y (N, M); T blocks of rows
    N = x.shape[0]
    for t in prange(T):
        forward_block(y, x, W, b, t * N // T, (t + 1) * N // T, False)


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _backward(dx, dW, db, dy, x, W, T, chunk, need_dx):
    # dy (N, M), x (N, D), W (D, M) -> dx (N, D) (if need_dx), dW (D, M), db (M,); T blocks of each
    for t in prange(T):
        backward_block(dx, dW, db, dy, x, W, t, T, chunk, need_dx)


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
    _backward(dx, dW, db, dy, x, W, numba.get_num_threads(), column_chunk(*dy.shape), need_dx)
    return (dx if need_dx else None), dW, db
