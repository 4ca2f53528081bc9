"""Convolution as im2col + GEMM, one image at a time. Mirrors fastnn/backends/numba/conv/im2col.py
(the same algorithm in Numba) and fastnn/backends/numpy/conv.py (the whole-batch textbook version).

For one image n, with K = C*KH*KW and P = OH*OW:

    colT (K, P)     colT[(c, i, j), oh*OW + ow] = x_padded[n, c, oh*stride + i, ow*stride + j]
    y[n]  (F, P)  = W2 @ colT + b[:, None]          W2 = W.reshape(F, K)
    dW    (F, K) += dy[n] @ colT.T                  summed over the images
    dcol  (K, P)  = W2.T @ dy[n]                    then col2im adds dcol back into dx[n]

Why one image and not the whole batch: the whole batch's columns are K x N*P floats (45 MB for
deep-cnn's 16->16 layer at batch 100), written once and read back by the GEMM at memory speed.
One image's columns (0.2-0.7 MB for the MNIST nets) stay in the core's L2 cache between being
written and being multiplied.

Threads: one OpenMP parallel region per call. The T threads take an even, contiguous share of
the images each (chunk t: images t*N//T up to (t+1)*N//T), with their own column buffer
cols[t], and call a single-threaded sgemm (fastnn.threads keeps BLAS at one thread while a
compiled backend is active, so BLAS's threads never fight OpenMP's for the cores). The weight
gradient is summed per chunk and the T partial sums are added once at the end, in chunk
order: the result depends on T, never on timing.

Padding is handled while the columns are built (zeros outside the image), so no padded copy
of x is made and the forward cache keeps x itself; backward rebuilds the columns.

The fused kernels (conv + bias + ReLU, then maybe the 2x2 max-pool; the specification is
fastnn/backends/composed.py, the adapter fastnn/backends/cython/fused.py) run the same per-image
loop with the epilogue (fastnn_ext/_epilogue.pxd) applied to each image's output block right after
its sgemm, and backward builds each image's gradient at the convolution output into a per-thread
buffer before the per-image backward work.

``im2col`` / ``col2im`` at the bottom are the contract's whole-batch functions, in the
reference's layout (N*OH*OW, C*KH*KW).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memcpy, memset

from fastnn_ext._common cimport FASTNN_OPENMP, gemm, tap_range, threads_for, vsum
from fastnn_ext._epilogue cimport bias_relu, bias_relu_pool_row, chain_gradient

OPENMP = bool(FASTNN_OPENMP)  # compiled with OpenMP; False: the serial build (_omp_shim.h)


def team_size(Py_ssize_t work, Py_ssize_t images):
    """Threads (and so per-thread buffers) a kernel below uses for ``images`` images and
    ``work`` multiply-adds: at most one per image, one for small work."""
    return max(1, min(threads_for(work), images))


# ------------------------------------------------------------------ one image's columns
# Pointers and Py_ssize_t indices: the inner loops are then plain contiguous loops that the
# compiler vectorises (with int indices, and Python's -fwrapv, it leaves them scalar).

cdef void _columns_image(floating *col, const floating *x, int C, int H, int W, int kh, int kw,
                         int stride, int pad, int OH, int OW) noexcept nogil:
    # x (C, H, W) one image -> col (C*KH*KW, OH*OW)
    # col[(c, i, j), oh*OW + ow] = x_padded[c, oh*stride + i, ow*stride + j]   (zero in the padding)
    cdef Py_ssize_t c, i, j, oh, ow, h, lo, hi
    cdef floating *dst
    cdef const floating *src
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                tap_range(W, OW, j, stride, pad, &lo, &hi)
                dst = col + ((c * kh + i) * kw + j) * OH * OW
                for oh in range(OH):
                    h = oh * stride + i - pad
                    if h < 0 or h >= H:
                        for ow in range(OW):
                            dst[ow] = 0
                    else:
                        # dst[lo:hi] = x[c, h, lo*stride + j - pad : : stride]
                        src = x + (c * H + h) * W
                        for ow in range(lo):
                            dst[ow] = 0
                        if stride == 1:  # libc's memcpy uses the CPU's widest vectors
                            memcpy(dst + lo, src + lo + j - pad, (hi - lo) * sizeof(floating))
                        else:
                            for ow in range(lo, hi):
                                dst[ow] = src[ow * stride + j - pad]
                        for ow in range(hi, OW):
                            dst[ow] = 0
                    dst += OW


cdef void _add_columns_image(floating *dx, const floating *col, int C, int H, int W, int kh,
                             int kw, int stride, int pad, int OH, int OW) noexcept nogil:
    # col (C*KH*KW, OH*OW) -> dx (C, H, W), zeroed first: the adjoint of _columns_image
    # dx_padded[c, oh*stride + i, ow*stride + j] += col[(c, i, j), oh*OW + ow]
    cdef Py_ssize_t c, i, j, oh, ow, h, lo, hi
    cdef floating *dst
    cdef const floating *src
    memset(dx, 0, C * H * W * sizeof(floating))
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                tap_range(W, OW, j, stride, pad, &lo, &hi)
                src = col + ((c * kh + i) * kw + j) * OH * OW
                for oh in range(OH):
                    h = oh * stride + i - pad
                    if 0 <= h < H:
                        # dx[c, h, lo*stride + j - pad : : stride] += src[lo:hi]
                        dst = dx + (c * H + h) * W
                        if stride == 1:  # contiguous: the compiler vectorises it
                            for ow in range(lo, hi):
                                dst[ow + j - pad] += src[ow]
                        else:
                            for ow in range(lo, hi):
                                dst[ow * stride + j - pad] += src[ow]
                    src += OW


# ------------------------------------------------------------------------ the convolution

def conv2d_forward(floating[:, :, ::1] y, floating[:, :, ::1] cols,
                   const floating[:, :, :, ::1] x, const floating[:, ::1] W2,
                   const floating[::1] b, int kh, int kw, int stride, int pad):
    # x (N, C, H, W), W2 (F, K), b (F,) -> y (N, F, P), K = C*KH*KW, P = OH*OW;
    # cols (T, K, P) scratch: one column buffer per thread
    cdef Py_ssize_t N = x.shape[0], F = W2.shape[0], T = cols.shape[0], t, n, f, p
    cdef int K = W2.shape[1], P = y.shape[2], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int OH = (x.shape[2] + 2 * pad - kh) // stride + 1
    cdef int OW = (x.shape[3] + 2 * pad - kw) // stride + 1
    if N == 0 or F == 0 or P == 0:
        return
    for t in prange(T, nogil=True, num_threads=T, schedule="static"):
        for n in range(t * N // T, (t + 1) * N // T):
            _columns_image(&cols[t, 0, 0], &x[n, 0, 0, 0], C, H, W, kh, kw, stride, pad, OH, OW)
            # y[n] = b[:, None]
            for f in range(F):
                for p in range(P):
                    y[n, f, p] = b[f]
            # y[n] += W2 @ cols[t]
            gemm(False, False, <int> F, P, K, 1, &W2[0, 0], K, &cols[t, 0, 0], P,
                 1, &y[n, 0, 0], P)


def conv2d_backward(floating[:, :, :, ::1] dx, floating[:, ::1] dW2, floating[::1] db,
                    floating[:, :, ::1] cols, floating[:, :, ::1] dW_parts,
                    floating[:, ::1] db_parts, const floating[:, :, ::1] dy,
                    const floating[:, :, :, ::1] x, const floating[:, ::1] W2, int kh, int kw,
                    int stride, int pad, bint need_dx):
    # dy (N, F, P), x (N, C, H, W), W2 (F, K) -> dW2 (F, K), db (F,), and dx (N, C, H, W) if
    # need_dx (else dx is not touched); scratch, one per thread: cols (T, K, P),
    # dW_parts (T, F, K), db_parts (T, F)
    cdef Py_ssize_t N = x.shape[0], F = W2.shape[0], T = cols.shape[0], t, n, g
    with nogil, parallel(num_threads=T):
        for t in prange(T, schedule="static"):
            memset(&dW_parts[t, 0, 0], 0, F * W2.shape[1] * sizeof(floating))
            memset(&db_parts[t, 0], 0, F * sizeof(floating))
            for n in range(t * N // T, (t + 1) * N // T):
                _backward_image(dx, dW_parts, db_parts, cols, &dy[n, 0, 0], x, W2, n, t, kh, kw,
                                stride, pad, need_dx)
        # dW2 = dW_parts.sum(axis=0); db = db_parts.sum(axis=0)   (in chunk order)
        for g in prange(F, schedule="static"):
            _sum_parts(dW2, db, dW_parts, db_parts, g)


cdef void _backward_image(floating[:, :, :, ::1] dx, floating[:, :, ::1] dW_parts,
                          floating[:, ::1] db_parts, floating[:, :, ::1] cols,
                          const floating *dy_n, const floating[:, :, :, ::1] x,
                          const floating[:, ::1] W2, Py_ssize_t n, Py_ssize_t t, int kh, int kw,
                          int stride, int pad, bint need_dx) noexcept nogil:
    # dy_n (F, P) the gradient at image n's output -> thread t's dW_parts[t] (F, K) and
    # db_parts[t] (F,) gain image n's share, and dx[n] (C, H, W) if need_dx; cols[t] scratch
    cdef Py_ssize_t F = W2.shape[0], f
    cdef int K = W2.shape[1], P = cols.shape[2], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int OH = (H + 2 * pad - kh) // stride + 1, OW = (W + 2 * pad - kw) // stride + 1
    _columns_image(&cols[t, 0, 0], &x[n, 0, 0, 0], C, H, W, kh, kw, stride, pad, OH, OW)
    # dW_parts[t] += dy[n] @ cols[t].T
    gemm(False, True, <int> F, K, P, 1, dy_n, P, &cols[t, 0, 0], P, 1, &dW_parts[t, 0, 0], K)
    # db_parts[t] += dy[n].sum(axis=1)
    for f in range(F):
        db_parts[t, f] += vsum(dy_n + f * P, P)
    if need_dx:
        # cols[t] = W2.T @ dy[n]   (the columns are spent: their buffer takes dcol)
        gemm(True, False, K, P, <int> F, 1, &W2[0, 0], K, dy_n, P, 0, &cols[t, 0, 0], P)
        # dx[n] = col2im(cols[t])
        _add_columns_image(&dx[n, 0, 0, 0], &cols[t, 0, 0], C, H, W, kh, kw, stride, pad, OH, OW)


cdef void _sum_parts(floating[:, ::1] dW2, floating[::1] db, const floating[:, :, ::1] dW_parts,
                     const floating[:, ::1] db_parts, Py_ssize_t g) noexcept nogil:
    # dW2[g] = dW_parts[:, g].sum(axis=0); db[g] = db_parts[:, g].sum()   (in chunk order)
    cdef Py_ssize_t K = dW2.shape[1], T = dW_parts.shape[0], u, k
    db[g] = db_parts[0, g]
    for k in range(K):
        dW2[g, k] = dW_parts[0, g, k]
    for u in range(1, T):
        db[g] += db_parts[u, g]
        for k in range(K):
            dW2[g, k] += dW_parts[u, g, k]


# --------------------------------------------------- fused: convolution + bias + ReLU (+ pool)
# The same per-image loop, with the epilogue (fastnn_ext/_epilogue.pxd) applied to image n's
# output block right after its sgemm, while it is in cache. With the pool, the sgemm writes into
# the thread's scratch z[t] (F, P) and only the pooled y[n] and its window winners reach memory.
# Backward builds image n's gradient at z into the thread's dz[t] (F, P) and runs the per-image
# backward above on it: every thread reads only its own images' dz.

def conv2d_relu_forward(floating[:, :, ::1] y, floating[:, :, ::1] cols,
                        const floating[:, :, :, ::1] x, const floating[:, ::1] W2,
                        const floating[::1] b, int kh, int kw, int stride, int pad):
    # x (N, C, H, W), W2 (F, K), b (F,) -> y (N, F, P) = relu(conv2d(x)); cols (T, K, P) scratch
    cdef Py_ssize_t N = x.shape[0], F = W2.shape[0], T = cols.shape[0], t, n, f
    cdef int K = W2.shape[1], P = y.shape[2], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int OH = (x.shape[2] + 2 * pad - kh) // stride + 1
    cdef int OW = (x.shape[3] + 2 * pad - kw) // stride + 1
    if N == 0 or F == 0 or P == 0:
        return
    for t in prange(T, nogil=True, num_threads=T, schedule="static"):
        for n in range(t * N // T, (t + 1) * N // T):
            _columns_image(&cols[t, 0, 0], &x[n, 0, 0, 0], C, H, W, kh, kw, stride, pad, OH, OW)
            # y[n] = W2 @ cols[t]
            gemm(False, False, <int> F, P, K, 1, &W2[0, 0], K, &cols[t, 0, 0], P,
                 0, &y[n, 0, 0], P)
            # y[n] = np.maximum(y[n] + b[:, None], 0)
            for f in range(F):
                bias_relu(&y[n, f, 0], &y[n, f, 0], b[f], P)


def conv2d_relu_pool_forward(floating[:, :, :, ::1] y, int[:, :, :, ::1] arg,
                             floating[:, :, ::1] z, floating[:, :, ::1] cols,
                             const floating[:, :, :, ::1] x, const floating[:, ::1] W2,
                             const floating[::1] b, int kh, int kw, int stride, int pad):
    # x (N, C, H, W), W2 (F, K), b (F,) -> y (N, F, OH//2, OW//2) = maxpool2x2(relu(conv2d(x))),
    # arg (N, F, OH//2, OW//2) each window's winner, -1 where y is 0 (see _epilogue.pxd);
    # scratch, one per thread: z (T, F, OH*OW), cols (T, K, OH*OW)
    cdef Py_ssize_t N = x.shape[0], F = W2.shape[0], T = cols.shape[0], t, n, f, i
    cdef int K = W2.shape[1], P = z.shape[2], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int OH = (x.shape[2] + 2 * pad - kh) // stride + 1
    cdef int OW = (x.shape[3] + 2 * pad - kw) // stride + 1
    cdef const floating *zf
    if N == 0 or F == 0 or y.shape[2] == 0 or y.shape[3] == 0:
        return
    for t in prange(T, nogil=True, num_threads=T, schedule="static"):
        for n in range(t * N // T, (t + 1) * N // T):
            _columns_image(&cols[t, 0, 0], &x[n, 0, 0, 0], C, H, W, kh, kw, stride, pad, OH, OW)
            # z[t] = W2 @ cols[t]   (image n's convolution, bias not yet added)
            gemm(False, False, <int> F, P, K, 1, &W2[0, 0], K, &cols[t, 0, 0], P,
                 0, &z[t, 0, 0], P)
            # y[n, f, i], arg[n, f, i] = the pooled relu(z[t, f, 2i:2i+2] + b[f]), row pair by pair
            for f in range(F):
                zf = &z[t, f, 0]
                for i in range(y.shape[2]):
                    bias_relu_pool_row(&y[n, f, i, 0], &arg[n, f, i, 0], zf + 2 * i * OW,
                                       zf + (2 * i + 1) * OW, b[f], y.shape[3])


def conv2d_relu_backward(floating[:, :, :, ::1] dx, floating[:, ::1] dW2, floating[::1] db,
                         floating[:, :, ::1] cols, floating[:, :, ::1] dz,
                         floating[:, :, ::1] dW_parts, floating[:, ::1] db_parts,
                         const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] y,
                         const int[:, :, :, ::1] arg, const floating[:, :, :, ::1] x,
                         const floating[:, ::1] W2, int kh, int kw, int stride, int pad,
                         bint need_dx):
    # The backward pass of conv + ReLU, or of conv + ReLU + pool:
    #   conv + ReLU:        dy (N, F, OH, OW), y (N, F, OH, OW) the forward output, arg empty
    #   conv + ReLU + pool: dy (N, F, OH//2, OW//2), arg (N, F, OH//2, OW//2), y empty
    # x (N, C, H, W), W2 (F, K) -> dW2 (F, K), db (F,), and dx (N, C, H, W) if need_dx (else dx
    # is not touched); scratch, one per thread: cols (T, K, P), dz (T, F, P), dW_parts (T, F, K),
    # db_parts (T, F), P = OH*OW
    cdef Py_ssize_t N = x.shape[0], F = W2.shape[0], T = cols.shape[0], t, n, g
    cdef int OH = (x.shape[2] + 2 * pad - kh) // stride + 1
    cdef int OW = (x.shape[3] + 2 * pad - kw) // stride + 1
    cdef Py_ssize_t dy_image = F * dy.shape[2] * dy.shape[3]
    cdef const floating *y0 = &y[0, 0, 0, 0] if y.shape[0] > 0 else NULL
    cdef const int *arg0 = &arg[0, 0, 0, 0] if arg.shape[0] > 0 else NULL
    with nogil, parallel(num_threads=T):
        for t in prange(T, schedule="static"):
            memset(&dW_parts[t, 0, 0], 0, F * W2.shape[1] * sizeof(floating))
            memset(&db_parts[t, 0], 0, F * sizeof(floating))
            for n in range(t * N // T, (t + 1) * N // T):
                # dz[t] = the gradient at image n's z: dy[n] * (y[n] > 0), or dy[n] unpooled to
                # its windows' winners
                chain_gradient(&dz[t, 0, 0], &dy[n, 0, 0, 0],
                               y0 + n * dy_image if arg0 == NULL else NULL,
                               arg0 + n * dy_image if arg0 != NULL else NULL, F, OH, OW)
                _backward_image(dx, dW_parts, db_parts, cols, &dz[t, 0, 0], x, W2, n, t, kh, kw,
                                stride, pad, need_dx)
        # dW2 = dW_parts.sum(axis=0); db = db_parts.sum(axis=0)   (in chunk order)
        for g in prange(F, schedule="static"):
            _sum_parts(dW2, db, dW_parts, db_parts, g)


# ------------------------------------------- the contract's im2col / col2im (whole batch)

cdef void _im2col_image(floating[:, ::1] col, const floating[:, :, :, ::1] x, Py_ssize_t n,
                        int kh, int kw, int stride, int pad, int OH, int OW) noexcept nogil:
    cdef int C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int oh, ow, c, i, j, h, w
    cdef Py_ssize_t row
    # col[(n, oh, ow), (c, i, j)] = x_padded[n, c, oh*stride + i, ow*stride + j]
    for oh in range(OH):
        for ow in range(OW):
            row = (n * OH + oh) * OW + ow
            for c in range(C):
                for i in range(kh):
                    h = oh * stride + i - pad
                    for j in range(kw):
                        w = ow * stride + j - pad
                        if 0 <= h < H and 0 <= w < W:
                            col[row, (c * kh + i) * kw + j] = x[n, c, h, w]
                        else:
                            col[row, (c * kh + i) * kw + j] = 0


def im2col(floating[:, ::1] col, const floating[:, :, :, ::1] x, int kh, int kw, int stride,
           int pad):
    # x (N, C, H, W) -> col (N*OH*OW, C*KH*KW), rows ordered (n, oh, ow), columns (c, i, j)
    cdef Py_ssize_t N = x.shape[0], n
    cdef int OH = (x.shape[2] + 2 * pad - kh) // stride + 1
    cdef int OW = (x.shape[3] + 2 * pad - kw) // stride + 1
    for n in prange(N, nogil=True, num_threads=threads_for(col.shape[0] * col.shape[1]),
                    schedule="static"):
        _im2col_image(col, x, n, kh, kw, stride, pad, OH, OW)


cdef void _col2im_image(floating[:, :, :, ::1] dx, const floating[:, ::1] col, Py_ssize_t n,
                        int kh, int kw, int stride, int pad, int OH, int OW) noexcept nogil:
    cdef int C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef int oh, ow, c, i, j, h, w
    cdef Py_ssize_t row
    memset(&dx[n, 0, 0, 0], 0, C * H * W * sizeof(floating))
    # dx_padded[n, c, oh*stride + i, ow*stride + j] += col[(n, oh, ow), (c, i, j)]
    for oh in range(OH):
        for ow in range(OW):
            row = (n * OH + oh) * OW + ow
            for c in range(C):
                for i in range(kh):
                    h = oh * stride + i - pad
                    if h < 0 or h >= H:
                        continue
                    for j in range(kw):
                        w = ow * stride + j - pad
                        if 0 <= w < W:
                            dx[n, c, h, w] += col[row, (c * kh + i) * kw + j]


def col2im(floating[:, :, :, ::1] dx, const floating[:, ::1] col, int kh, int kw, int stride,
           int pad):
    # col (N*OH*OW, C*KH*KW) -> dx (N, C, H, W), overlapping windows summed
    cdef Py_ssize_t N = dx.shape[0], n
    cdef int OH = (dx.shape[2] + 2 * pad - kh) // stride + 1
    cdef int OW = (dx.shape[3] + 2 * pad - kw) // stride + 1
    for n in prange(N, nogil=True, num_threads=threads_for(col.shape[0] * col.shape[1]),
                    schedule="static"):
        _col2im_image(dx, col, n, kh, kw, stride, pad, OH, OW)
