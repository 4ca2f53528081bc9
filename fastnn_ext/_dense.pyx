"""Fully connected layer: y = x @ W + b, and the fused y = relu(x @ W + b). Mirrors
fastnn/backends/numpy/dense.py; the fused kernels' specification is fastnn/backends/composed.py.

The three matrix products go to BLAS (SciPy's ``cython_blas``, called without the GIL);
the bias broadcast and its gradient are plain loops. Outputs come first, then inputs:
the adapter (fastnn/backends/cython/dense.py) allocates them.

Threads: BLAS runs single-threaded while a compiled backend is active (fastnn.threads), so
each kernel splits its products over the OpenMP threads itself, one parallel region per
call: block t of T takes rows n0:n1 of x / dy (for y and dx) and rows d0:d1 of dW, i.e. the
columns d0:d1 of x (dW = x.T @ dy). Every output element is written by exactly one block,
and the blocks are fixed by T alone, so the result never depends on timing.

The fused dense + ReLU kernels keep that split. Forward: each block's rows get their product,
then bias and ReLU while they are still in cache. Backward: dz = dy * (y > 0) is small (N x M,
100 x 100 in the MNIST nets), so every thread computes all of it into its own scratch row of
dz_parts (redundant but tiny, and no thread waits for another) and then takes its blocks of dx,
dW and db from it.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastnn_ext._common cimport FASTNN_OPENMP, gemm, relu, threads_for
from fastnn_ext._epilogue cimport relu_gradient

OPENMP = bool(FASTNN_OPENMP)  # compiled with OpenMP; False: the serial build (_omp_shim.h)

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


def team_size(Py_ssize_t work):
    """Threads (and so per-thread scratch rows) a kernel below uses for ``work`` multiply-adds."""
    return max(1, threads_for(work))


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
                   const floating[:, ::1] W, bint need_dx=True):
    # dy (N, M), x (N, D), W (D, M) -> dx (N, D) if need_dx (else dx is not touched), dW (D, M),
    # db (M,)
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = W.shape[1], t
    cdef Py_ssize_t T = max(1, threads_for(N * M * D))
    if N == 0 or M == 0 or D == 0:  # empty products: BLAS would be asked for nothing
        _empty_backward(dx, dW, db, dy, need_dx)
        return
    for t in prange(T, nogil=True, num_threads=T, schedule="static"):
        _backward_block(dx, dW, db, &dy[0, 0], x, W, t, T, need_dx)


cdef void _empty_backward(floating[:, ::1] dx, floating[:, ::1] dW, floating[::1] db,
                          const floating[:, ::1] dz, bint need_dx) noexcept nogil:
    # N, M or D is 0: dx, dW = 0; db = dz.sum(axis=0)
    cdef Py_ssize_t N = dz.shape[0], M = dz.shape[1], n, m
    if need_dx:
        dx[:, :] = 0
    dW[:, :] = 0
    db[:] = 0
    for n in range(N):
        for m in range(M):
            db[m] += dz[n, m]


cdef void _backward_block(floating[:, ::1] dx, floating[:, ::1] dW, floating[::1] db,
                          const floating *dz, const floating[:, ::1] x, const floating[:, ::1] W,
                          Py_ssize_t t, Py_ssize_t T, bint need_dx) noexcept nogil:
    # block t of T of the gradients through y = x @ W + b, from dz (N, M) the gradient at y
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = W.shape[1], n, m, lo, hi
    if need_dx:
        # dx[n0:n1] = dz[n0:n1] @ W.T
        lo, hi = split(N, T, t, 1), split(N, T, t + 1, 1)
        gemm(False, True, <int> (hi - lo), <int> D, <int> M, 1, dz + lo * M, <int> M,
             &W[0, 0], <int> M, 0, &dx[lo, 0], <int> D)
    # dW[d0:d1] = x[:, d0:d1].T @ dz
    lo, hi = split(D, T, t, DW_ALIGN), split(D, T, t + 1, DW_ALIGN)
    gemm(True, False, <int> (hi - lo), <int> M, <int> N, 1, &x[0, lo], <int> D,
         dz, <int> M, 0, &dW[lo, 0], <int> M)
    # db[m0:m1] = dz[:, m0:m1].sum(axis=0)   (row by row: the inner loop over m vectorises)
    lo, hi = split(M, T, t, 1), split(M, T, t + 1, 1)
    for m in range(lo, hi):
        db[m] = 0
    for n in range(N):
        for m in range(lo, hi):
            db[m] += dz[n * M + m]


# ------------------------------------------------------------------ fused dense + ReLU

def dense_relu_forward(floating[:, ::1] y, const floating[:, ::1] x, const floating[:, ::1] W,
                       const floating[::1] b):
    # x (N, D), W (D, M), b (M,) -> y (N, M) = relu(x @ W + b)
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = W.shape[1], n, t, n0, n1
    cdef Py_ssize_t T = max(1, min(threads_for(N * M * (D + 1)), N))
    if N == 0 or M == 0:
        return
    for t in prange(T, nogil=True, num_threads=T, schedule="static"):
        n0, n1 = split(N, T, t, 1), split(N, T, t + 1, 1)
        # y[n0:n1] = x[n0:n1] @ W
        gemm(False, False, <int> (n1 - n0), <int> M, <int> D, 1, &x[n0, 0], <int> D,
             &W[0, 0], <int> M, 0, &y[n0, 0], <int> M)
        # y[n0:n1] = np.maximum(y[n0:n1] + b, 0), row by row while the block is in cache
        for n in range(n0, n1):
            _bias_relu_row(&y[n, 0], &b[0], M)


cdef inline void _bias_relu_row(floating *y, const floating *b, Py_ssize_t M) noexcept nogil:
    # y[:M] = np.maximum(y[:M] + b, 0)   (NaN stays NaN: _common.relu)
    cdef Py_ssize_t m
    for m in range(M):
        y[m] = relu(y[m] + b[m])


def dense_relu_backward(floating[:, ::1] dx, floating[:, ::1] dW, floating[::1] db,
                        floating[:, :, ::1] dz_parts, const floating[:, ::1] dy,
                        const floating[:, ::1] x, const floating[:, ::1] W,
                        const floating[:, ::1] y, bint need_dx):
    # dy, y (N, M), x (N, D), W (D, M) -> dx (N, D) if need_dx (else not touched), dW (D, M),
    # db (M,); dz_parts (T, N, M) scratch, one dz per thread (T threads)
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = W.shape[1], T = dz_parts.shape[0], t
    if N == 0 or M == 0 or D == 0:  # empty products: dz into thread 0's scratch, then as above
        if N > 0 and M > 0:
            relu_gradient(&dz_parts[0, 0, 0], &dy[0, 0], &y[0, 0], N * M)
        _empty_backward(dx, dW, db, dz_parts[0], need_dx)
        return
    for t in prange(T, nogil=True, num_threads=T, schedule="static"):
        # dz_parts[t] = dy * (y > 0), all of it: every block below reads whole columns of dz
        relu_gradient(&dz_parts[t, 0, 0], &dy[0, 0], &y[0, 0], N * M)
        _backward_block(dx, dW, db, &dz_parts[t, 0, 0], x, W, t, T, need_dx)
