"""Fully connected layer: y = x @ W + b. Mirrors fastnn/backends/numpy/dense.py.

The three matrix products go to BLAS (SciPy's ``cython_blas``, called without the GIL);
the bias broadcast and its gradient are plain loops. Outputs come first, then inputs:
the adapter (fastnn/backends/cython/dense.py) allocates them.

Threads: BLAS runs single-threaded while a compiled backend is active (fastnn.threads), so
each kernel splits its products over the OpenMP threads itself, one parallel region per
call: block t of T takes rows n0:n1 of x / dy (for y and dx) and rows d0:d1 of dW, i.e. the
columns d0:d1 of x (dW = x.T @ dy). Every output element is written by exactly one block,
and the blocks are fixed by T alone, so the result never depends on timing.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastnn_ext._common cimport gemm, threads_for

# dW's row blocks start on multiples of this many rows (16 floats: one cache line of x's row)
cdef enum:
    DW_ALIGN = 16


cdef inline Py_ssize_t split(Py_ssize_t total, Py_ssize_t parts, Py_ssize_t t,
                             Py_ssize_t align) noexcept nogil:
    # Where block t of 0..total starts when split into `parts` nearly equal blocks, each
    # starting on a multiple of `align` (block `parts` starts at total).
    if t >= parts:
        return total
    return (t * total // parts) // align * align


def dense_forward(floating[:, ::1] y, const floating[:, ::1] x, const floating[:, ::1] W,
                  const floating[::1] b):
    # x (N, D), W (D, M), b (M,) -> y (N, M)
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = W.shape[1], n, m, t, n0, n1
    cdef Py_ssize_t T = max(1, min(threads_for(N * M * (D + 1)), N))
    if N == 0 or M == 0:
        return
    for t in prange(T, nogil=True, num_threads=T, schedule="static"):
        n0, n1 = split(N, T, t, 1), split(N, T, t + 1, 1)
        # y[n0:n1] = b[None, :]
        for n in range(n0, n1):
            for m in range(M):
                y[n, m] = b[m]
        # y[n0:n1] += x[n0:n1] @ W
        gemm(False, False, <int> (n1 - n0), <int> M, <int> D, 1, &x[n0, 0], <int> D,
             &W[0, 0], <int> M, 1, &y[n0, 0], <int> M)


def dense_backward(floating[:, ::1] dx, floating[:, ::1] dW, floating[::1] db,
                   const floating[:, ::1] dy, const floating[:, ::1] x,
                   const floating[:, ::1] W):
    # dy (N, M), x (N, D), W (D, M) -> dx (N, D), dW (D, M), db (M,)
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = W.shape[1], n, m, t, lo, hi
    cdef Py_ssize_t T = max(1, threads_for(N * M * D))
    if N == 0 or M == 0 or D == 0:  # empty products: BLAS would be asked for nothing
        dx[:, :] = 0
        dW[:, :] = 0
        db[:] = 0
        if N > 0 and M > 0:
            for n in range(N):
                for m in range(M):
                    db[m] += dy[n, m]
        return
    for t in prange(T, nogil=True, num_threads=T, schedule="static"):
        # dx[n0:n1] = dy[n0:n1] @ W.T
        lo, hi = split(N, T, t, 1), split(N, T, t + 1, 1)
        gemm(False, True, <int> (hi - lo), <int> D, <int> M, 1, &dy[lo, 0], <int> M,
             &W[0, 0], <int> M, 0, &dx[lo, 0], <int> D)
        # dW[d0:d1] = x[:, d0:d1].T @ dy
        lo, hi = split(D, T, t, DW_ALIGN), split(D, T, t + 1, DW_ALIGN)
        gemm(True, False, <int> (hi - lo), <int> M, <int> N, 1, &x[0, lo], <int> D,
             &dy[0, 0], <int> M, 0, &dW[lo, 0], <int> M)
        # db[m0:m1] = dy[:, m0:m1].sum(axis=0)   (row by row: the inner loop over m vectorises)
        lo, hi = split(M, T, t, 1), split(M, T, t + 1, 1)
        for m in range(lo, hi):
            db[m] = 0
        for n in range(N):
            for m in range(lo, hi):
                db[m] += dy[n, m]
