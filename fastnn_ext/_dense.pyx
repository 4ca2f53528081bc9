"""Fully connected layer: y = x @ W + b. Mirrors fastnn/backends/numpy/dense.py.

The three matrix products go to BLAS (SciPy's ``cython_blas``, called without the GIL);
the bias broadcast and its gradient are plain loops. Outputs come first, then inputs:
the adapter (fastnn/backends/cython/dense.py) allocates them.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastnn_ext._common cimport gemm, threads_for


def dense_forward(floating[:, ::1] y, const floating[:, ::1] x, const floating[:, ::1] W,
                  const floating[::1] b):
    # x (N, D), W (D, M), b (M,) -> y (N, M)
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = W.shape[1], n, m
    if N == 0 or M == 0:
        return
    with nogil:
        # y = b[None, :]
        for n in prange(N, num_threads=threads_for(N * M), schedule="static"):
            for m in range(M):
                y[n, m] = b[m]
        if D > 0:
            # y += x @ W
            gemm(False, False, <int> N, <int> M, <int> D, 1, &x[0, 0], <int> D,
                 &W[0, 0], <int> M, 1, &y[0, 0], <int> M)


def dense_backward(floating[:, ::1] dx, floating[:, ::1] dW, floating[::1] db,
                   const floating[:, ::1] dy, const floating[:, ::1] x,
                   const floating[:, ::1] W):
    # dy (N, M), x (N, D), W (D, M) -> dx (N, D), dW (D, M), db (M,)
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = W.shape[1], n, m
    with nogil:
        # db = dy.sum(axis=0)   (row by row: the inner loop over m vectorises)
        for m in range(M):
            db[m] = 0
        for n in range(N):
            for m in range(M):
                db[m] += dy[n, m]
        if N == 0 or M == 0 or D == 0:
            for n in range(N):
                for m in range(D):
                    dx[n, m] = 0
            for n in range(D):
                for m in range(M):
                    dW[n, m] = 0
        else:
            # dx = dy @ W.T
            gemm(False, True, <int> N, <int> D, <int> M, 1, &dy[0, 0], <int> M,
                 &W[0, 0], <int> M, 0, &dx[0, 0], <int> D)
            # dW = x.T @ dy
            gemm(True, False, <int> D, <int> M, <int> N, 1, &x[0, 0], <int> D,
                 &dy[0, 0], <int> M, 0, &dW[0, 0], <int> M)
