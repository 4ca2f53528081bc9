"""What a fused convolution does to its output rows while they are in cache (bias, ReLU, the
2x2 max-pool) and, going back, how it rebuilds the convolution's output gradient from the
pooled one. Shared by the direct and Winograd algorithms; what it must equal is
fastnn/backends/composed.py.

The pooled output keeps, per pixel, the flat index oh*OW + ow of its window's first maximum
(like maxpool2d_forward). Its gradient reaches only that pixel, and only where the ReLU let
it through: the winner's activation is the pooled output itself, so the mask is ``y > 0``.
"""
from numba import njit

from .._common import FAST

# the fused kernels' post-processing of the convolution's output
PLAIN, RELU, RELU_POOL = 0, 1, 2


@njit(cache=True, fastmath=FAST)
def bias_relu_row(dst, src, bias, relu):
    # dst = src + bias, then max(., 0) if relu
    if relu:
        for j in range(dst.shape[0]):
            dst[j] = max(src[j] + bias, 0.0)
    else:
        for j in range(dst.shape[0]):
            dst[j] = src[j] + bias


@njit(cache=True, fastmath=FAST)
def pool_row(y_row, arg_row, top, bottom, bias, oh, OW):
    # top, bottom: conv output rows oh, oh + 1 without the bias -> y_row (OW // 2,) and arg_row
    # y_row[pw] = max(relu(top/bottom[2 pw : 2 pw + 2] + bias)); arg_row[pw] = flat index of the
    # window's first maximum in row-major order (compared with the bias added, as the composition does)
    for pw in range(y_row.shape[0]):
        w = 2 * pw
        best, where = top[w] + bias, oh * OW + w
        v = top[w + 1] + bias
        if v > best:
            best, where = v, oh * OW + w + 1
        v = bottom[w] + bias
        if v > best:
            best, where = v, (oh + 1) * OW + w
        v = bottom[w + 1] + bias
        if v > best:
            best, where = v, (oh + 1) * OW + w + 1
        y_row[pw] = max(best, 0.0)
        arg_row[pw] = where


@njit(cache=True)
def unpool_plane(dz, pitch, OW, dy, arg, y):
    # dy, arg, y (PH, PW) of one (image, filter) -> dz, the conv output gradient as rows of
    # `pitch` floats (pitch >= OW): dz = 0; dz[h*pitch + w] = dy where y > 0, (h, w) = divmod(arg, OW)
    dz[:] = 0.0
    for ph in range(dy.shape[0]):
        for pw in range(dy.shape[1]):
            if y[ph, pw] > 0.0:
                k = arg[ph, pw]
                dz[(k // OW) * pitch + k % OW] = dy[ph, pw]


@njit(cache=True, fastmath=FAST)
def relu_mask_row(dst, dy, y):
    # dst = dy * (y > 0)
    for j in range(dst.shape[0]):
        dst[j] = dy[j] if y[j] > 0.0 else 0.0
