"""What a fused convolution does to its output rows while they are in cache (bias, ReLU, the
2x2 max-pool) and, going back, how it rebuilds the convolution's output gradient from the
pooled one. Shared by the direct and Winograd algorithms; what it must equal is
fastnn/backends/composed.py.

The pooled output keeps, per pixel, where in its 2x2 window the first maximum is: a code
0 1 / 2 3 (row-major). Its gradient reaches only that pixel, and only where the ReLU let it
through: the winner's activation is the pooled output itself, so the mask is ``y > 0``.

The loops are written without data-dependent branches (comparisons become selects): on real
activations which pixel wins is a coin toss, and a mispredicted branch per window cost more
than the rest of the epilogue. For the same reason the window is stored as a code, not a flat
index: finding the pixel back then takes shifts, not an integer division.
"""
import numpy as np
from numba import njit

from .._common import FAST

# the fused kernels' post-processing of the convolution's output
PLAIN, RELU, RELU_POOL = 0, 1, 2
# float32 zero: a float64 0.0 in a float32 loop converts every element and stops vectorisation
ZERO = np.float32(0.0)


@njit(cache=True, fastmath=FAST)
def bias_relu_row(dst, src, bias, relu):
    # dst = src + bias, then max(., 0) if relu
    if relu:
        for j in range(dst.shape[0]):
            dst[j] = max(src[j] + bias, ZERO)
    else:
        for j in range(dst.shape[0]):
            dst[j] = src[j] + bias


@njit(cache=True, fastmath=FAST)
def relu_inplace(z):
    # z = max(z, 0), in place
    for j in range(z.shape[0]):
        z[j] = max(z[j], ZERO)


@njit(cache=True, fastmath=FAST)
def pool_plane(y, arg, z, pitch, bias):
    # z: conv output rows (without the bias) one after another, `pitch` floats apart ->
    # y, arg (PH, PW): y[ph, pw] = max(relu(z[2 ph : 2 ph + 2, 2 pw : 2 pw + 2] + bias)) and arg the
    # code of the window's first maximum in row-major order (compared with the bias added, as the
    # composition does). Flat indices into z, not a row view per window row: short views cost more
    # than the pooling itself.
    for ph in range(y.shape[0]):
        top = 2 * ph * pitch
        for pw in range(y.shape[1]):
            k = top + 2 * pw
            a, b = z[k] + bias, z[k + 1] + bias
            c, d = z[k + pitch] + bias, z[k + pitch + 1] + bias
            right_top, right_bottom = b > a, d > c  # strict: on a tie the earlier pixel wins
            upper = b if right_top else a
            lower = d if right_bottom else c
            down = lower > upper
            y[ph, pw] = max(lower if down else upper, ZERO)
            arg[ph, pw] = (2 + right_bottom) if down else np.int32(right_top)


@njit(cache=True, fastmath=FAST)
def unpool_plane(dz, pitch, dy, arg, y):
    # dy, arg, y (PH, PW) of one (image, filter) -> dz, the conv output gradient as rows of `pitch`
    # floats: each window's winner (code arg) gets dy where y > 0, every other pixel 0.
    # All four pixels of a window are written, as products with 0/1 masks: a scatter to the
    # winner alone (after zeroing the plane), or selects, ran 3-5x slower (data-dependent
    # addresses and branches do not vectorise)
    PH, PW = dy.shape
    for ph in range(PH):
        top = 2 * ph * pitch
        for pw in range(PW):
            g = dy[ph, pw] * np.float32(y[ph, pw] > 0.0)
            k, i = arg[ph, pw], top + 2 * pw
            dz[i] = g * np.float32(k == 0)
            dz[i + 1] = g * np.float32(k == 1)
            dz[i + pitch] = g * np.float32(k == 2)
            dz[i + pitch + 1] = g * np.float32(k == 3)
        for j in range(top + 2 * PW, top + pitch):  # what no window covers: the right edge
            dz[j] = 0.0
        for j in range(top + pitch + 2 * PW, top + 2 * pitch):
            dz[j] = 0.0
    for j in range(2 * PH * pitch, dz.shape[0]):  # and the bottom rows
        dz[j] = 0.0


@njit(cache=True, fastmath=FAST)
def relu_mask_row(dst, dy, y):
    # dst = dy * (y > 0)
    for j in range(dst.shape[0]):
        dst[j] = dy[j] * np.float32(y[j] > 0.0)
