"""Direct convolution, stride 1: every filter tap is one long vectorised multiply-add.
Mirrors fastnn/backends/numpy/conv.py (what it computes) and the direct loops of
fastnn_ext/_conv.pyx.

The trick is to treat each padded image plane as one "wide" row. An output pixel
q = oh*Wp + ow of the padded width Wp reads x_flat[q + i*Wp + j] for tap (i, j), so

    y[n, f] (as wide rows) = b[f] + sum over c, i, j of W[f, c, i, j] * x_flat[n, c, i*Wp + j : i*Wp + j + L]

with L = (OH - 1)*Wp + OW: one contiguous multiply-add over the whole image per tap (the
Wp - OW columns past the right edge are computed and thrown away). No im2col copy at all,
which wins when C*KH*KW is small (the 1-channel first layer of an MNIST net: im2col would copy
every pixel KH*KW times to feed a GEMM whose inner dimension is only KH*KW). For many input
channels the GEMM of fastnn/backends/numba/conv/im2col.py wins: here every multiply-add also
loads and stores the accumulator.
"""
import numpy as np
from numba import njit, prange

from .._common import FAST, f32


def padded(x, pad):
    # x (N, C, H, W) -> (N, C, H + 2 pad, W + 2 pad) float32 contiguous, zeros around
    if pad == 0:
        return f32(x)
    return np.pad(f32(x), ((0, 0), (0, 0), (pad, pad), (pad, pad)))


@njit(cache=True, parallel=True, fastmath=FAST)
def _forward(y, xp, W, b):
    # xp (N, C, Hp, Wp), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW), stride 1
    N, C, Hp, Wp = xp.shape
    F, KH, KW = W.shape[0], W.shape[2], W.shape[3]
    OH, OW = y.shape[2], y.shape[3]
    L = (OH - 1) * Wp + OW  # wide output pixels q = oh*Wp + ow that stay inside the image
    for n in prange(N):
        acc = np.empty(L, np.float32)
        for f in range(F):
            # acc = b[f] + sum_{c,i,j} W[f, c, i, j] * x_flat[c, i*Wp + j : i*Wp + j + L]
            acc[:] = b[f]
            for c in range(C):
                x_flat = xp[n, c].reshape(Hp * Wp)
                for i in range(KH):
                    # the taps of kernel row i, up to three per pass over acc (fewer loads and
                    # stores of acc per multiply-add); slices, so every loop indexes from 0 and vectorises
                    j = 0
                    while j < KW:
                        x0 = x_flat[i * Wp + j:i * Wp + j + L]
                        w0 = W[f, c, i, j]
                        if j + 2 < KW:
                            x1, x2 = x_flat[i * Wp + j + 1:i * Wp + j + 1 + L], x_flat[i * Wp + j + 2:i * Wp + j + 2 + L]
                            w1, w2 = W[f, c, i, j + 1], W[f, c, i, j + 2]
                            for q in range(L):
                                acc[q] += w0 * x0[q] + w1 * x1[q] + w2 * x2[q]
                            j += 3
                        elif j + 1 < KW:
                            x1, w1 = x_flat[i * Wp + j + 1:i * Wp + j + 1 + L], W[f, c, i, j + 1]
                            for q in range(L):
                                acc[q] += w0 * x0[q] + w1 * x1[q]
                            j += 2
                        else:
                            for q in range(L):
                                acc[q] += w0 * x0[q]
                            j += 1
            # y[n, f] = acc viewed as (OH, Wp), first OW columns
            for oh in range(OH):
                src, dst = acc[oh * Wp:oh * Wp + OW], y[n, f, oh]
                for ow in range(OW):
                    dst[ow] = src[ow]


@njit(cache=True, parallel=True, fastmath=FAST)
def _backward_weights(part_W, part_b, dy, xp):
    # dy (N, F, OH, OW), xp (N, C, Hp, Wp) -> part_W (T, F, C, KH, KW), part_b (T, F): one
    # partial sum per chunk of images, stride 1
    # dW[f, c, i, j] = sum_{n, oh, ow} dy[n, f, oh, ow] * xp[n, c, oh + i, ow + j]; db = dy.sum((0, 2, 3))
    N, F, OH, OW = dy.shape
    C, Hp, Wp = xp.shape[1], xp.shape[2], xp.shape[3]
    KH, KW = part_W.shape[3], part_W.shape[4]
    T = part_W.shape[0]
    L = (OH - 1) * Wp + OW
    for t in prange(T):
        part_W[t] = 0.0
        part_b[t] = 0.0
        dy_wide = np.zeros(L, np.float32)  # dy[n, f] laid out at q = oh*Wp + ow, zeros between rows
        for n in range(t * N // T, (t + 1) * N // T):
            for f in range(F):
                s = np.float32(0.0)
                for oh in range(OH):
                    src, dst = dy[n, f, oh], dy_wide[oh * Wp:oh * Wp + OW]
                    for ow in range(OW):
                        dst[ow] = src[ow]
                        s += src[ow]
                part_b[t, f] += s
                for c in range(C):
                    x_flat = xp[n, c].reshape(Hp * Wp)
                    for i in range(KH):
                        # dot(dy_wide, x_flat[i*Wp + j : i*Wp + j + L]) for the taps j of row i,
                        # up to three per pass so each load of dy_wide feeds three multiply-adds
                        j = 0
                        while j < KW:
                            x0 = x_flat[i * Wp + j:i * Wp + j + L]
                            t0 = t1 = t2 = np.float32(0.0)
                            if j + 2 < KW:
                                x1 = x_flat[i * Wp + j + 1:i * Wp + j + 1 + L]
                                x2 = x_flat[i * Wp + j + 2:i * Wp + j + 2 + L]
                                for q in range(L):
                                    t0 += dy_wide[q] * x0[q]
                                    t1 += dy_wide[q] * x1[q]
                                    t2 += dy_wide[q] * x2[q]
                                part_W[t, f, c, i, j + 1] += t1
                                part_W[t, f, c, i, j + 2] += t2
                                step = 3
                            elif j + 1 < KW:
                                x1 = x_flat[i * Wp + j + 1:i * Wp + j + 1 + L]
                                for q in range(L):
                                    t0 += dy_wide[q] * x0[q]
                                    t1 += dy_wide[q] * x1[q]
                                part_W[t, f, c, i, j + 1] += t1
                                step = 2
                            else:
                                for q in range(L):
                                    t0 += dy_wide[q] * x0[q]
                                step = 1
                            part_W[t, f, c, i, j] += t0
                            j += step


@njit(cache=True, parallel=True, fastmath=FAST)
def _backward_input(dxp, dy, W):
    # dy (N, F, OH, OW), W (F, C, KH, KW) -> dxp (N, C, Hp, Wp), stride 1
    # dxp[n, c, oh + i, ow + j] += W[f, c, i, j] * dy[n, f, oh, ow]   (over f, i, j)
    N, F, OH, OW = dy.shape
    C, Hp, Wp = dxp.shape[1], dxp.shape[2], dxp.shape[3]
    KH, KW = W.shape[2], W.shape[3]
    L = (OH - 1) * Wp + OW
    for n in prange(N):
        dxp[n] = 0.0
        dy_wide = np.zeros(L, np.float32)
        for f in range(F):
            for oh in range(OH):
                src, dst = dy[n, f, oh], dy_wide[oh * Wp:oh * Wp + OW]
                for ow in range(OW):
                    dst[ow] = src[ow]
            for c in range(C):
                dx_flat = dxp[n, c].reshape(Hp * Wp)  # a view: writes land in dxp
                for i in range(KH):
                    for j in range(KW):
                        w = W[f, c, i, j]
                        dx_tap = dx_flat[i * Wp + j:i * Wp + j + L]
                        for q in range(L):
                            dx_tap[q] += w * dy_wide[q]


# Partial weight-gradient sums: a fixed number, so the result does not depend on the thread count.
N_CHUNKS = 16


def forward(x, W, b, pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW), stride 1; and xp for backward
    xp = padded(x, pad)
    N, _, Hp, Wp = xp.shape
    F, _, KH, KW = W.shape
    y = np.empty((N, F, Hp - KH + 1, Wp - KW + 1), np.float32)
    _forward(y, xp, W, b)
    return y, xp


def backward(dy, xp, W, pad, need_dx):
    # dy (N, F, OH, OW), xp the padded input -> (dx or None, dW, db)
    N, F = dy.shape[:2]
    T = max(1, min(N, N_CHUNKS))
    part_W, part_b = np.empty((T,) + W.shape, np.float32), np.empty((T, F), np.float32)
    _backward_weights(part_W, part_b, dy, xp)
    dW, db = part_W.sum(axis=0), part_b.sum(axis=0)
    if not need_dx:
        return None, dW, db
    dxp = np.empty(xp.shape, np.float32)
    _backward_input(dxp, dy, W)
    H, Wd = xp.shape[2] - 2 * pad, xp.shape[3] - 2 * pad
    return np.ascontiguousarray(dxp[:, :, pad:pad + H, pad:pad + Wd]), dW, db
