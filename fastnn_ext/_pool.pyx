"""Max and average pooling. Mirrors fastnn/backends/numpy/pool.py.

Every (image, channel) plane is independent, so each kernel is one ``prange`` over the
N*C planes. Max pooling remembers, for each output, the flat index h*W + w of the
input that won, as numpy's argmax over the -inf padded window picks it: the first maximum in
row-major order, or the first NaN (which the output then is); -1 where the padding wins, i.e.
where every pixel of the window is -inf and a padding cell comes first (backward drops it).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY

from fastnn_ext._common cimport FASTNN_OPENMP, argmax4, beats, threads_for

OPENMP = bool(FASTNN_OPENMP)  # compiled with OpenMP; False: the serial build (_omp_shim.h)


cdef inline void _max_row_2x2(floating *y, int *arg, const floating *top, int first, int W,
                              Py_ssize_t n) noexcept nogil:
    # top: rows 2*oh and 2*oh + 1 of a plane (W apart), first = 2*oh*W the flat index of top[0]:
    # window j = [[a, b], [c, d]] = top[2j : 2j+2], top[W + 2j : W + 2j+2]:
    # y[j] = its max, arg[j] = first + the flat offset of its first max (row-major) or first NaN.
    # argmax4 and pointers with Py_ssize_t indices: the compiler vectorises the loop, with no
    # branches for random data to mispredict.
    cdef Py_ssize_t j
    cdef int at
    cdef const floating *bottom = top + W
    for j in range(n):
        at = argmax4(top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1], &y[j])
        # window position at (0 .. 3) is at // 2 rows and at % 2 columns from its top left
        arg[j] = first + <int> (2 * j) + (at // 2) * W + at % 2


cdef void _max_plane_2x2(floating[:, :, ::1] y, int[:, :, ::1] arg,
                         const floating[:, :, ::1] x, Py_ssize_t q) noexcept nogil:
    # size 2, stride 2, no padding (every MNIST net here): a row of windows at a time
    cdef Py_ssize_t W = x.shape[2], oh
    for oh in range(y.shape[1]):
        _max_row_2x2(&y[q, oh, 0], &arg[q, oh, 0], &x[q, 2 * oh, 0], <int> (2 * oh * W), <int> W,
                     y.shape[2])


cdef void _max_plane(floating[:, :, ::1] y, int[:, :, ::1] arg,
                     const floating[:, :, ::1] x, Py_ssize_t q, int size, int stride,
                     int pad) noexcept nogil:
    cdef int H = x.shape[1], W = x.shape[2], OH = y.shape[1], OW = y.shape[2]
    cdef int oh, ow, i, j, h, w, h0, w0, best_at
    cdef floating best, v
    if size == 2 and stride == 2 and pad == 0:
        _max_plane_2x2(y, arg, x, q)
        return
    for oh in range(OH):
        for ow in range(OW):
            # win = x_padded[q, oh*s:oh*s+size, ow*s:ow*s+size] (-inf padding); y[q, oh, ow] =
            # win.max(), arg[q, oh, ow] = the flat index of win.argmax(): the first max or first NaN
            h0, w0 = oh * stride - pad, ow * stride - pad  # the window's top left, maybe padding
            best = -INFINITY
            best_at = -1
            for i in range(size):
                h = h0 + i
                if h < 0 or h >= H:
                    continue
                for j in range(size):
                    w = w0 + j
                    if 0 <= w < W:
                        v = x[q, h, w]
                        if beats(v, best):
                            best = v
                            best_at = h * W + w
            if best_at < 0 and 0 <= h0 < H and 0 <= w0 < W:
                # every pixel is -inf, and the first one comes before any padding: it wins the tie
                best_at = h0 * W + w0
            y[q, oh, ow] = best
            arg[q, oh, ow] = best_at


def maxpool2d_forward(floating[:, :, ::1] y, int[:, :, ::1] arg,
                      const floating[:, :, ::1] x, int size, int stride, int pad):
    # x (N*C, H, W) -> y (N*C, OH, OW), arg (N*C, OH, OW) flat h*W + w of each window's max
    cdef Py_ssize_t Q = x.shape[0], q
    for q in prange(Q, nogil=True, num_threads=threads_for(y.shape[0] * y.shape[1] * y.shape[2]
                                                           * size * size),
                    schedule="static"):
        _max_plane(y, arg, x, q, size, stride, pad)


cdef void _max_back_plane(floating[:, ::1] dx, const int[:, ::1] arg,
                          const floating[:, ::1] dy, Py_ssize_t q) noexcept nogil:
    cdef Py_ssize_t k, HW = dx.shape[1], P = dy.shape[1]
    for k in range(HW):
        dx[q, k] = 0
    # dx[q].flat[arg[q, k]] += dy[q, k]
    for k in range(P):
        if arg[q, k] >= 0:
            dx[q, arg[q, k]] += dy[q, k]


def maxpool2d_backward(floating[:, ::1] dx, const int[:, ::1] arg, const floating[:, ::1] dy):
    # dy (N*C, OH*OW), arg (N*C, OH*OW) -> dx (N*C, H*W)
    cdef Py_ssize_t Q = dx.shape[0], q
    for q in prange(Q, nogil=True, num_threads=threads_for(dx.shape[0] * dx.shape[1]),
                    schedule="static"):
        _max_back_plane(dx, arg, dy, q)


cdef void _avg_plane(floating[:, :, ::1] y, const floating[:, :, ::1] x, Py_ssize_t q,
                     int size, int stride, int pad) noexcept nogil:
    cdef int H = x.shape[1], W = x.shape[2], OH = y.shape[1], OW = y.shape[2]
    cdef int oh, ow, i, j, h, w
    cdef floating s, area = size * size
    for oh in range(OH):
        for ow in range(OW):
            # y[q, oh, ow] = x_padded[q, oh*s:oh*s+size, ow*s:ow*s+size].sum() / size**2
            s = 0
            for i in range(size):
                h = oh * stride + i - pad
                if h < 0 or h >= H:
                    continue
                for j in range(size):
                    w = ow * stride + j - pad
                    if 0 <= w < W:
                        s = s + x[q, h, w]
            y[q, oh, ow] = s / area


def avgpool2d_forward(floating[:, :, ::1] y, const floating[:, :, ::1] x, int size, int stride,
                      int pad):
    # x (N*C, H, W) -> y (N*C, OH, OW); zero padding counts towards the mean
    cdef Py_ssize_t Q = x.shape[0], q
    for q in prange(Q, nogil=True, num_threads=threads_for(y.shape[0] * y.shape[1] * y.shape[2]
                                                           * size * size),
                    schedule="static"):
        _avg_plane(y, x, q, size, stride, pad)


cdef void _avg_back_plane(floating[:, :, ::1] dx, const floating[:, :, ::1] dy, Py_ssize_t q,
                          int size, int stride, int pad) noexcept nogil:
    cdef int H = dx.shape[1], W = dx.shape[2], OH = dy.shape[1], OW = dy.shape[2]
    cdef int oh, ow, i, j, h, w
    cdef floating share, area = size * size
    for h in range(H):
        for w in range(W):
            dx[q, h, w] = 0
    for oh in range(OH):
        for ow in range(OW):
            # dx_padded[q, oh*s:oh*s+size, ow*s:ow*s+size] += dy[q, oh, ow] / size**2
            share = dy[q, oh, ow] / area
            for i in range(size):
                h = oh * stride + i - pad
                if h < 0 or h >= H:
                    continue
                for j in range(size):
                    w = ow * stride + j - pad
                    if 0 <= w < W:
                        dx[q, h, w] += share


def avgpool2d_backward(floating[:, :, ::1] dx, const floating[:, :, ::1] dy, int size,
                       int stride, int pad):
    # dy (N*C, OH, OW) -> dx (N*C, H, W): each window shares its gradient equally
    cdef Py_ssize_t Q = dx.shape[0], q
    for q in prange(Q, nogil=True, num_threads=threads_for(dx.shape[0] * dx.shape[1] * dx.shape[2]),
                    schedule="static"):
        _avg_back_plane(dx, dy, q, size, stride, pad)
