"""Direct convolution: loops over the filter taps, no im2col copy. The twin of
fastnn/backends/numba/conv/direct.py (which, for stride 1 only, runs each tap over a whole
padded plane as one "wide row" instead of row by row); what it computes is
fastnn/backends/numpy/conv.py.

    y[n, f, oh, ow] = b[f] + sum over c, i, j of W[f, c, i, j] * x_padded[n, c, oh*s + i, ow*s + j]

Every filter tap (c, i, j) is one multiply-add along an output row (ow), the loop the compiler
vectorises; tap_range clips each row to the part that reads inside the image, so the padding
costs nothing and no padded copy of x is made. Any stride, any number of channels, no scratch
beyond per-filter partial sums. It is the plain algorithm, kept as a choice and as a check on
the others: measured here it loses to im2col + BLAS on every MNIST layer, even the 1-channel
first layers (where im2col's GEMM has an inner dimension of only KH*KW): its vector loops run
over rows of only 8-28 floats, and every tap loads and stores the output row again. See
conv2d_algorithm in fastnn/backends/cython/conv.py.

Threads: one OpenMP parallel region per call. Forward and the input gradient split the images;
the weight gradient splits the filters (each filter's sums over the whole batch belong to one
thread, so the result does not depend on the thread count).

The loops use pointers to rows and Py_ssize_t indices: with int indices (and Python's -fwrapv)
the compiler leaves the inner loops scalar.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memset

from fastnn_ext._common cimport tap_range, threads_for, vsum


cdef inline void _axpy_row(floating *dst, floating a, const floating *src, Py_ssize_t lo,
                           Py_ssize_t hi, Py_ssize_t stride) noexcept nogil:
    # dst[lo:hi] += a * src[lo*stride : hi*stride : stride]
    cdef Py_ssize_t o
    if stride == 1:
        for o in range(lo, hi):
            dst[o] += a * src[o]
    else:
        for o in range(lo, hi):
            dst[o] += a * src[o * stride]


cdef void _forward_image(floating *y, const floating *x, const floating *Wt, const floating *b,
                         int F, int C, int H, int W, int KH, int KW, int OH, int OW, int stride,
                         int pad) noexcept nogil:
    # x (C, H, W) one image, Wt (F, C, KH, KW), b (F,) -> y (F, OH, OW)
    cdef Py_ssize_t f, c, i, j, oh, ow, h, lo, hi
    cdef floating *y_row
    for f in range(F):
        for oh in range(OH):
            # y[f, oh, :] = b[f] + sum over c, i, j of W[f, c, i, j] * x_padded[c, oh*s + i, j::s]
            y_row = y + (f * OH + oh) * OW
            for ow in range(OW):
                y_row[ow] = b[f]
            for c in range(C):
                for i in range(KH):
                    h = oh * stride + i - pad
                    if 0 <= h < H:
                        for j in range(KW):
                            tap_range(W, OW, j, stride, pad, &lo, &hi)
                            _axpy_row(y_row, Wt[((f * C + c) * KH + i) * KW + j],
                                      x + (c * H + h) * W + j - pad, lo, hi, stride)


def conv2d_forward(floating[:, :, :, ::1] y, const floating[:, :, :, ::1] x,
                   const floating[:, :, :, ::1] W, const floating[::1] b, int stride, int pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)
    cdef Py_ssize_t N = x.shape[0], n
    cdef int F = W.shape[0], C = W.shape[1], KH = W.shape[2], KW = W.shape[3]
    cdef int H = x.shape[2], Wd = x.shape[3], OH = y.shape[2], OW = y.shape[3]
    cdef int T = threads_for(N * F * OH * OW * C * KH * KW)
    if N == 0 or F == 0 or OH * OW == 0:
        return
    for n in prange(N, nogil=True, num_threads=T, schedule="static"):
        _forward_image(&y[n, 0, 0, 0], &x[n, 0, 0, 0], &W[0, 0, 0, 0], &b[0], F, C, H, Wd, KH,
                       KW, OH, OW, stride, pad)


cdef void _weight_grad_filter(floating *dW, floating *db, floating *acc, const floating *dy,
                              const floating *x, int N, int F, int C, int H, int W, int KH,
                              int KW, int OH, int OW, Py_ssize_t f, int stride,
                              int pad) noexcept nogil:
    # dy (N, F, OH, OW), x (N, C, H, W) -> dW[f] (C, KH, KW), db[f]; acc (C*KH*KW + 1, OW) scratch
    # dW[f, c, i, j] = sum over n, oh, ow of dy[n, f, oh, ow] * x_padded[n, c, oh*s + i, ow*s + j]
    # db[f] = dy[:, f].sum()
    # acc[tap, :] collects the products lane by lane (ow), so the adds vectorise;
    # acc[C*KH*KW, :] collects dy itself, for db.
    cdef Py_ssize_t taps = C * KH * KW, n, c, i, j, oh, ow, h, lo, hi
    cdef const floating *dy_row
    cdef floating *acc_row
    cdef const floating *x_row
    memset(acc, 0, (taps + 1) * OW * sizeof(floating))
    for n in range(N):
        for oh in range(OH):
            dy_row = dy + ((n * F + f) * OH + oh) * OW
            acc_row = acc + taps * OW
            for ow in range(OW):
                acc_row[ow] += dy_row[ow]
            for c in range(C):
                for i in range(KH):
                    h = oh * stride + i - pad
                    if 0 <= h < H:
                        for j in range(KW):
                            # acc[(c,i,j), lo:hi] += dy[n,f,oh, lo:hi] * x_padded[n,c,h, j::s][lo:hi]
                            tap_range(W, OW, j, stride, pad, &lo, &hi)
                            acc_row = acc + ((c * KH + i) * KW + j) * OW
                            x_row = x + ((n * C + c) * H + h) * W + j - pad
                            if stride == 1:
                                for ow in range(lo, hi):
                                    acc_row[ow] += dy_row[ow] * x_row[ow]
                            else:
                                for ow in range(lo, hi):
                                    acc_row[ow] += dy_row[ow] * x_row[ow * stride]
    for c in range(taps):
        dW[c] = vsum(acc + c * OW, OW)
    db[0] = vsum(acc + taps * OW, OW)


cdef void _input_grad_image(floating *dx, const floating *dy, const floating *Wt, int F, int C,
                            int H, int W, int KH, int KW, int OH, int OW, int stride,
                            int pad) noexcept nogil:
    # dy (F, OH, OW) one image, Wt (F, C, KH, KW) -> dx (C, H, W)
    # dx_padded[c, oh*s + i, ow*s + j] += W[f, c, i, j] * dy[f, oh, ow]
    cdef Py_ssize_t f, c, i, j, oh, ow, h, lo, hi
    cdef floating wt
    cdef floating *dx_row
    cdef const floating *dy_row
    memset(dx, 0, C * H * W * sizeof(floating))
    for f in range(F):
        for oh in range(OH):
            dy_row = dy + (f * OH + oh) * OW
            for c in range(C):
                for i in range(KH):
                    h = oh * stride + i - pad
                    if 0 <= h < H:
                        for j in range(KW):
                            # dx[c, h, j - pad::s][lo:hi] += W[f, c, i, j] * dy[f, oh, lo:hi]
                            tap_range(W, OW, j, stride, pad, &lo, &hi)
                            wt = Wt[((f * C + c) * KH + i) * KW + j]
                            dx_row = dx + (c * H + h) * W + j - pad
                            if stride == 1:
                                for ow in range(lo, hi):
                                    dx_row[ow] += wt * dy_row[ow]
                            else:
                                for ow in range(lo, hi):
                                    dx_row[ow * stride] += wt * dy_row[ow]


def conv2d_backward(floating[:, :, :, ::1] dx, floating[:, :, :, ::1] dW, floating[::1] db,
                    floating[:, :, ::1] acc, const floating[:, :, :, ::1] dy,
                    const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] W, int stride,
                    int pad, bint need_dx):
    # dy (N, F, OH, OW), x (N, C, H, W), W (F, C, KH, KW) -> dW (F, C, KH, KW), db (F,), and
    # dx (N, C, H, W) if need_dx (else dx is not touched); acc (F, C*KH*KW + 1, OW) scratch
    cdef Py_ssize_t N = dy.shape[0], F = dy.shape[1], f, n
    cdef int C = W.shape[1], KH = W.shape[2], KW = W.shape[3], OH = dy.shape[2], OW = dy.shape[3]
    cdef int H = x.shape[2], Wd = x.shape[3]
    cdef int T = threads_for(N * F * OH * OW * C * KH * KW)
    if F == 0:
        return
    if N == 0 or OH * OW == 0:
        dW[:, :, :, :] = 0
        db[:] = 0
        return
    with nogil, parallel(num_threads=T):
        for f in prange(F, schedule="static"):
            _weight_grad_filter(&dW[f, 0, 0, 0], &db[f], &acc[f, 0, 0], &dy[0, 0, 0, 0],
                                &x[0, 0, 0, 0], N, F, C, H, Wd, KH, KW, OH, OW, f, stride, pad)
        if need_dx:
            for n in prange(N, schedule="static"):
                _input_grad_image(&dx[n, 0, 0, 0], &dy[n, 0, 0, 0], &W[0, 0, 0, 0], F, C, H, Wd,
                                  KH, KW, OH, OW, stride, pad)
