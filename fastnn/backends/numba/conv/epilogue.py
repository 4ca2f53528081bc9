"""What a fused convolution does to its output rows while they are in cache (bias, ReLU, the
2x2 max-pool) and, going back, how it rebuilds the convolution's output gradient from the
pooled one. Shared by the direct and Winograd algorithms; what it must equal is
fastnn/backends/composed.py.

The pooled output keeps, per pixel, where in its 2x2 window the winner is: a code 0 1 / 2 3
(row-major) where the window's maximum is positive, else -1 - s for a winner s the ReLU blocks
(the first NaN, which wins its window as in np.argmax and stays NaN; else the first pixel, as
argmax picks among the zeros of relu(window)). pool(relu(z)) = relu(pool(z)), so the gradient
reaches only the winner, and only where the ReLU let it through: backward needs dy and these
codes, nothing else (the same codes as fastnn_ext/_epilogue.pxd).

The loops are written without data-dependent branches or addresses: on real activations which
pixel wins is a coin toss. Comparisons become maxima and 0/1 flags, and the gradient is dy times
a one-hot row looked up by the code; a scatter to the winner, or selects on the code, ran 3-5x
slower. They take one image's planes at a time, flat: a view per row or per plane costs more
than the few windows in it.
"""
import numpy as np
from numba import njit

from .._common import FAST, ZERO, beats, has_nan, relu

# the fused kernels' post-processing of the convolution's output
PLAIN, RELU, RELU_POOL = 0, 1, 2


@njit(cache=True, fastmath=FAST)
def bias_relu_row(dst, src, bias, with_relu):
    # dst = src + bias, then np.maximum(., 0) if relu
    if with_relu:
        for j in range(dst.shape[0]):
            dst[j] = relu(src[j] + bias)
    else:
        for j in range(dst.shape[0]):
            dst[j] = src[j] + bias


@njit(cache=True, fastmath=FAST)
def relu_inplace(z):
    # z = np.maximum(z, 0), in place
    for j in range(z.shape[0]):
        z[j] = relu(z[j])


# row code + 4, for the codes -4 .. 3: the window's four pixels (row-major), 1 at a winner that passes
ONE_HOT = np.array([[0, 0, 0, 0]] * 4 + [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)


@njit(cache=True, fastmath=FAST)
def pool_image(y, arg, z, pitch, rows, bias):
    # z: F planes of `rows` conv output rows (without the bias), `pitch` floats apart, flat ->
    # y, arg (F, PH, PW): for window w = z[f, 2 ph : 2 ph + 2, 2 pw : 2 pw + 2] + bias[f],
    # y = np.maximum(w.max(), 0) and arg = w.argmax() (the first maximum) if w.max() > 0 else -1
    # Comparisons that know NaN cost a third of the whole fused forward, so the plain ones run
    # and, after them, a sum of the planes says whether a NaN was there: then it goes again.
    F, PH, PW = y.shape
    for f in range(F):
        plane, b = f * rows * pitch, bias[f]
        for ph in range(PH):
            top = plane + 2 * ph * pitch
            for pw in range(PW):
                k = top + 2 * pw
                a, bb = z[k], z[k + 1]
                c, d = z[k + pitch], z[k + pitch + 1]
                right_top, right_bottom = np.int32(bb > a), np.int32(d > c)  # strict: ties go to the first
                upper, lower = max(a, bb), max(c, d)
                down = np.int32(lower > upper)
                best = max(upper, lower) + b
                positive = np.int32(best > ZERO)
                y[f, ph, pw] = max(best, ZERO)
                at = right_top + down * (2 + right_bottom - right_top)
                arg[f, ph, pw] = positive * (at + 1) - 1
    # a sum of what the windows read, and the biases: 2 PH rows of 2 PW in each plane (only those:
    # the Winograd kernels hand in one tile's columns of rows many tiles wide)
    seen = has_nan(bias, 0, F)
    for f in range(F):
        for r in range(2 * PH):
            start = f * rows * pitch + r * pitch
            seen = seen or has_nan(z, start, start + 2 * PW)
    if seen:
        pool_image_nan(y, arg, z, pitch, rows, bias)


@njit(cache=True, fastmath=FAST)
def pool_image_nan(y, arg, z, pitch, rows, bias):
    # pool_image where a NaN may be, in the composition's order: the bias is added first, the
    # first NaN wins its window (as np.argmax) and stays NaN in y, and a blocked window's code
    # is -1 - (its first NaN, else its first pixel: argmax of relu's zeros)
    F, PH, PW = y.shape
    for f in range(F):
        plane, b = f * rows * pitch, bias[f]
        for ph in range(PH):
            top = plane + 2 * ph * pitch
            for pw in range(PW):
                k = top + 2 * pw
                a, bb = z[k] + b, z[k + 1] + b
                c, d = z[k + pitch] + b, z[k + pitch + 1] + b
                right_top, right_bottom = beats(bb, a), beats(d, c)
                upper = bb if right_top else a
                lower = d if right_bottom else c
                down = beats(lower, upper)
                best = lower if down else upper
                y[f, ph, pw] = relu(best)
                at = np.int32(right_top) + np.int32(down) * (2 + np.int32(right_bottom) - np.int32(right_top))
                arg[f, ph, pw] = at if best > ZERO else (-1 - at if best != best else -1)


@njit(cache=True, fastmath=FAST)
def unpool_image(dz, pitch, rows, dy, arg):
    # dy, arg (F, PH, PW) of one image -> dz: F planes of `rows` rows `pitch` floats apart, flat:
    # the gradient at the conv output, dy at each window's winner (none where the ReLU blocks
    # it), 0 elsewhere. Every pixel is written once, window by window (no zeroing pass first).
    # dy times a one-hot row: an infinite dy would make its window's zeros NaN, so an image with
    # one is done again by unpool_image_exact (a product, then a check: as in pool_image).
    F, PH, PW = dy.shape
    total = ZERO
    for f in range(F):
        plane = f * rows * pitch
        for ph in range(PH):
            top = plane + 2 * ph * pitch
            for pw in range(PW):
                g, s, k = dy[f, ph, pw], arg[f, ph, pw] + 4, top + 2 * pw
                total += g
                dz[k] = g * ONE_HOT[s, 0]
                dz[k + 1] = g * ONE_HOT[s, 1]
                dz[k + pitch] = g * ONE_HOT[s, 2]
                dz[k + pitch + 1] = g * ONE_HOT[s, 3]
            for j in range(top + 2 * PW, top + pitch):  # what no window covers: the right edge
                dz[j] = 0.0
            for j in range(top + pitch + 2 * PW, top + 2 * pitch):
                dz[j] = 0.0
        for j in range(plane + 2 * PH * pitch, plane + rows * pitch):  # and the bottom rows
            dz[j] = 0.0
    if total * ZERO != ZERO:  # NaN: some dy is infinite or NaN
        unpool_image_exact(dz, pitch, rows, dy, arg)


@njit(cache=True)
def unpool_image_exact(dz, pitch, rows, dy, arg):
    # unpool_image's windows as the composition has them: dy * (y > 0) at the winner (NaN for an
    # infinite dy the ReLU blocks), exactly 0 at the other three pixels
    F, PH, PW = dy.shape
    for f in range(F):
        for ph in range(PH):
            for pw in range(PW):
                code, g = arg[f, ph, pw], dy[f, ph, pw]
                winner = code if code >= 0 else -1 - code
                g = g if code >= 0 else g * ZERO
                k = f * rows * pitch + 2 * ph * pitch + 2 * pw
                for i in range(4):
                    dz[k + (i // 2) * pitch + i % 2] = g if i == winner else ZERO


@njit(cache=True, fastmath=FAST)
def relu_mask_row(dst, dy, y):
    # dst = dy * (y > 0)
    for j in range(dst.shape[0]):
        dst[j] = dy[j] * np.float32(y[j] > 0.0)
