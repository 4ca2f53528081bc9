"""Max and average pooling. Mirrors fastnn/backends/numpy/pool.py.

Every (image, channel) plane is independent, so each kernel is one ``prange`` over the
N*C planes. Max pooling remembers, for each output, the flat index h*W + w of the
input that won (-1 when the window lies wholly in the -inf padding); ties go to the
first window position in row-major order, as numpy's argmax does.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY

from fastnn_ext._common cimport threads_for


cdef void _max_plane_2x2(floating[:, :, ::1] y, int[:, :, ::1] arg,
                         const floating[:, :, ::1] x, Py_ssize_t q) noexcept nogil:
    # size 2, stride 2, no padding (every MNIST net here). Written as maxima and selects
    # on values already loaded, so the compiler emits no branches for random data to
    # mispredict.
    cdef int W = x.shape[2], OH = y.shape[1], OW = y.shape[2]
    cdef int oh, ow, w, right_top, right_bottom, lower
    cdef floating a, b, c, d, best_top, best_bottom
    cdef const floating *top
    cdef const floating *bottom
    for oh in range(OH):
        top = &x[q, 2 * oh, 0]
        bottom = top + W
        for ow in range(OW):
            w = 2 * ow
            # window [[a, b], [c, d]]: y = its max, arg = where the first max (row-major) is
            a, b, c, d = top[w], top[w + 1], bottom[w], bottom[w + 1]
            right_top = b > a
            best_top = b if right_top else a
            right_bottom = d > c
            best_bottom = d if right_bottom else c
            lower = best_bottom > best_top
            y[q, oh, ow] = best_bottom if lower else best_top
            # the flags are 0 or 1: integer arithmetic picks the index without a branch
            arg[q, oh, ow] = (2 * oh * W + w + right_top
                              + lower * (W + right_bottom - right_top))


cdef void _max_plane(floating[:, :, ::1] y, int[:, :, ::1] arg,
                     const floating[:, :, ::1] x, Py_ssize_t q, int size, int stride,
                     int pad) noexcept nogil:
    cdef int H = x.shape[1], W = x.shape[2], OH = y.shape[1], OW = y.shape[2]
    cdef int oh, ow, i, j, h, w, best_at
    cdef floating best, v
    if size == 2 and stride == 2 and pad == 0:
        _max_plane_2x2(y, arg, x, q)
        return
    for oh in range(OH):
        for ow in range(OW):
            # y[q, oh, ow] = x_padded[q, oh*s:oh*s+size, ow*s:ow*s+size].max()
            best = -INFINITY
            best_at = -1
            for i in range(size):
                h = oh * stride + i - pad
                if h < 0 or h >= H:
                    continue
                for j in range(size):
                    w = ow * stride + j - pad
                    if 0 <= w < W:
                        v = x[q, h, w]
                        if v > best or (best_at < 0 and v == best):
                            best = v
                            best_at = h * W + w
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
