"""Direct convolution, stride 1: every filter tap is one long vectorised multiply-add.
Mirrors fastnn/backends/numpy/conv.py (what it computes) and fastnn_ext/_conv_direct.pyx.

The trick is to treat each padded image plane as one "wide" row. An output pixel
q = oh*Wp + ow of the padded width Wp reads x_flat[q + i*Wp + j] for tap (i, j), so

    y[n, f] (as wide rows) = b[f] + sum over c, i, j of W[f, c, i, j] * x_flat[n, c, i*Wp + j : i*Wp + j + L]

with L = (OH - 1)*Wp + OW: one contiguous multiply-add over the whole image per tap (the
Wp - OW columns past the right edge are computed and thrown away). No im2col copy at all.
It used to run the 1-channel first layers; since im2col builds its columns with contiguous
copies and the fused epilogue pools from its GEMM's output, im2col is faster on all of them
(conv2d_algorithm's docstring has the figures): here every few multiply-adds also load and
store the accumulator. It stays as an algorithm to force (FASTNN_CONV_ALGO=direct), tested
like the others, fused kernels included.
"""
import numpy as np
from numba import njit, prange

from .._common import FAST, PRANGE, f32
from .epilogue import PLAIN, RELU, RELU_POOL, ZERO, bias_relu_row, pool_image, relu_mask_row, unpool_image


def padded(x, pad):
    # x (N, C, H, W) -> (N, C, H + 2 pad, W + 2 pad) float32 contiguous, zeros around
    if pad == 0:
        return f32(x)
    return np.pad(f32(x), ((0, 0), (0, 0), (pad, pad), (pad, pad)))


# ------------------------------------------------------------- one image, one filter

@njit(cache=True, fastmath=FAST)
def filter_image(acc, xp, W, b, n, f):
    # acc (L,) = b[f] + sum_{c,i,j} W[f, c, i, j] * x_flat[n, c, i*Wp + j : i*Wp + j + L]:
    # filter f's output for image n as wide rows (pitch Wp)
    C, Hp, Wp = xp.shape[1], xp.shape[2], xp.shape[3]
    KH, KW = W.shape[2], W.shape[3]
    L = acc.shape[0]
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


@njit(cache=True, fastmath=FAST)
def weight_grad_image(dW, dy_wide, xp, n, f):
    # dW[f, c, i, j] += dot(dy_wide, x_flat[n, c, i*Wp + j : i*Wp + j + L]): filter f's weight
    # gradient from image n, dy_wide its output gradient as wide rows (zeros between the rows)
    C, Hp, Wp = xp.shape[1], xp.shape[2], xp.shape[3]
    KH, KW = dW.shape[2], dW.shape[3]
    L = dy_wide.shape[0]
    for c in range(C):
        x_flat = xp[n, c].reshape(Hp * Wp)
        for i in range(KH):
            # the taps j of row i, up to three per pass so each load of dy_wide feeds three multiply-adds
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
                    dW[f, c, i, j + 1] += t1
                    dW[f, c, i, j + 2] += t2
                    step = 3
                elif j + 1 < KW:
                    x1 = x_flat[i * Wp + j + 1:i * Wp + j + 1 + L]
                    for q in range(L):
                        t0 += dy_wide[q] * x0[q]
                        t1 += dy_wide[q] * x1[q]
                    dW[f, c, i, j + 1] += t1
                    step = 2
                else:
                    for q in range(L):
                        t0 += dy_wide[q] * x0[q]
                    step = 1
                dW[f, c, i, j] += t0
                j += step


@njit(cache=True, fastmath=FAST)
def input_grad_image(dxp, dy_wide, W, n, f):
    # dxp[n, c, oh + i, ow + j] += W[f, c, i, j] * dy[n, f, oh, ow], with dy as wide rows
    C, Hp, Wp = dxp.shape[1], dxp.shape[2], dxp.shape[3]
    KH, KW = W.shape[2], W.shape[3]
    L = dy_wide.shape[0]
    for c in range(C):
        dx_flat = dxp[n, c].reshape(Hp * Wp)  # a view: writes land in dxp
        for i in range(KH):
            for j in range(KW):
                w = W[f, c, i, j]
                dx_tap = dx_flat[i * Wp + j:i * Wp + j + L]
                for q in range(L):
                    dx_tap[q] += w * dy_wide[q]


# ------------------------------------------------------------- the parallel regions

@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _forward(y, arg, xp, W, b, post):
    # xp (N, C, Hp, Wp), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW), stride 1; post PLAIN or
    # RELU; RELU_POOL: y (N, F, OH // 2, OW // 2) = maxpool2x2(relu(conv)), arg its argmax
    N, C, Hp, Wp = xp.shape
    F, KH, KW = W.shape[0], W.shape[2], W.shape[3]
    OH, OW = Hp - KH + 1, Wp - KW + 1
    L = (OH - 1) * Wp + OW  # wide output pixels q = oh*Wp + ow that stay inside the image
    for n in prange(N):
        acc = np.empty(L, np.float32)
        no_bias = np.zeros(1, np.float32)
        for f in range(F):
            filter_image(acc, xp, W, b, n, f)
            if post == RELU_POOL:  # acc holds the bias already
                pool_image(y[n, f:f + 1], arg[n, f:f + 1], acc, Wp, OH, no_bias)
            else:
                # y[n, f] = acc viewed as (OH, Wp), first OW columns (then ReLU)
                for oh in range(OH):
                    bias_relu_row(y[n, f, oh], acc[oh * Wp:oh * Wp + OW], ZERO, post == RELU)


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _backward(part_W, part_b, dxp, dy, arg, y, xp, W, post, need_dx):
    # dy (N, F, OH, OW) -> part_W (T, F, C, KH, KW), part_b (T, F): one partial sum per chunk of
    # images; dxp (N, C, Hp, Wp) if need_dx; stride 1. post RELU: dy is masked by y > 0 (y the
    # forward output); RELU_POOL: dy, arg, y are the pooled output's, unpooled per image here.
    # dW[f, c, i, j] = sum_{n, oh, ow} dz[n, f, oh, ow] * xp[n, c, oh + i, ow + j]; db = dz.sum((0, 2, 3))
    # dxp[n, c, oh + i, ow + j] += W[f, c, i, j] * dz[n, f, oh, ow]
    N, F = dy.shape[0], W.shape[0]
    Hp, Wp = xp.shape[2], xp.shape[3]
    OH, OW = Hp - W.shape[2] + 1, Wp - W.shape[3] + 1
    T = part_W.shape[0]
    L = (OH - 1) * Wp + OW
    for t in prange(T):
        part_W[t] = 0.0
        part_b[t] = 0.0
        dz_wide = np.zeros(OH * Wp, np.float32)  # dz[n, f] at q = oh*Wp + ow, zeros between rows
        for n in range(t * N // T, (t + 1) * N // T):
            if need_dx:
                dxp[n] = 0.0
            for f in range(F):
                if post == RELU_POOL:
                    unpool_image(dz_wide, Wp, OH, dy[n, f:f + 1], arg[n, f:f + 1])
                else:
                    for oh in range(OH):  # dz = dy (* (y > 0) after a ReLU), row by row
                        dst = dz_wide[oh * Wp:oh * Wp + OW]
                        if post == RELU:
                            relu_mask_row(dst, dy[n, f, oh], y[n, f, oh])
                        else:
                            for ow in range(OW):
                                dst[ow] = dy[n, f, oh, ow]
                s = np.float32(0.0)
                for q in range(L):
                    s += dz_wide[q]
                part_b[t, f] += s
                weight_grad_image(part_W[t], dz_wide[:L], xp, n, f)
                if need_dx:
                    input_grad_image(dxp, dz_wide[:L], W, n, f)


# Partial weight-gradient sums: a fixed number, so the result does not depend on the thread count.
N_CHUNKS = 16


def forward(x, W, b, pad, post=PLAIN):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW) (RELU_POOL: (N, F, OH//2, OW//2)),
    # stride 1; the padded x and the argmax (RELU_POOL) for backward
    xp = padded(x, pad)
    N, _, Hp, Wp = xp.shape
    F, _, KH, KW = W.shape
    OH, OW = Hp - KH + 1, Wp - KW + 1
    shape = (N, F, OH // 2, OW // 2) if post == RELU_POOL else (N, F, OH, OW)
    y = np.empty(shape, np.float32)
    arg = np.empty(shape if post == RELU_POOL else (0, 0, 0, 0), np.int32)
    _forward(y, arg, xp, W, b, post)
    return y, xp, arg


def backward(dy, xp, W, pad, need_dx, post=PLAIN, arg=None, y=None):
    # dy (N, F, OH, OW) (RELU_POOL: the pooled output's), xp the padded input -> (dx or None, dW, db);
    # y the forward output (RELU, RELU_POOL) and arg its argmax (RELU_POOL)
    N, F = dy.shape[:2]
    T = max(1, min(N, N_CHUNKS))
    part_W, part_b = np.empty((T,) + W.shape, np.float32), np.empty((T, F), np.float32)
    dxp = np.empty(xp.shape, np.float32) if need_dx else xp  # xp: an untouched stand-in
    arg = np.empty((0, 0, 0, 0), np.int32) if arg is None else arg
    _backward(part_W, part_b, dxp, dy, arg, dy if y is None else y, xp, W, post, need_dx)
    dW, db = part_W.sum(axis=0), part_b.sum(axis=0)
    if not need_dx:
        return None, dW, db
    H, Wd = xp.shape[2] - 2 * pad, xp.shape[3] - 2 * pad
    return np.ascontiguousarray(dxp[:, :, pad:pad + H, pad:pad + Wd]), dW, db
