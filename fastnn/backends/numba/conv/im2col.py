"""Convolution as im2col + GEMM, one image at a time. Mirrors fastnn/backends/numpy/conv.py
(the whole-batch textbook version) and fastnn_ext/_conv.pyx (the same algorithm in Cython).

For one image n, with K = C*KH*KW and P = OH*OW:

    col (K, P)      col[(c, i, j), oh*OW + ow] = x_padded[n, c, oh*stride + i, ow*stride + j]
    y[n]  (F, P)  = W2 @ col + b[:, None]          W2 = W.reshape(F, K)
    dW    (F, K) += dy[n] @ col.T                  summed over the images
    dcol  (K, P)  = W2.T @ dy[n]                   then col2im adds dcol back into dx[n]

Why one image and not the whole batch: the textbook's whole-batch im2col writes K x N*P
floats (45 MB for deep-cnn's 16->16 layer at batch 100) and reads them back for the GEMM, so
the convolution runs at memory speed. One image's columns (0.2-0.7 MB for the MNIST nets) stay
in the core's L2 cache between being written and being multiplied.

Threads: one parallel region per call. Each of Numba's T threads takes an even share of the
images, with its own column buffer (scratch, reused from call to call), and calls a
single-threaded sgemm (fastnn/backends/numba/blas.py). The weight gradient is summed per
thread and the T partial sums are added once at the end, in a fixed order.

Padding is handled while the columns are built (zeros outside the image), so no padded copy
of x is made and the forward cache keeps x itself; backward rebuilds the columns.
"""
import numpy as np
from numba import njit, prange

from ...numpy.conv import output_size
from ..blas import gemm


@njit(cache=True, inline="always")
def _tap_range(size, out, k, stride, pad):
    # the outputs o, lo <= o < hi, whose input o*stride + k - pad lies in 0..size-1: the part
    # of a row that filter tap k reads without falling into the zero padding
    first, last = pad - k, size - 1 + pad - k
    lo = 0 if first <= 0 else (first + stride - 1) // stride
    hi = 0 if last < 0 else min(last // stride + 1, out)
    return min(lo, hi), hi


@njit(cache=True)
def columns_image(col, x, kh, kw, stride, pad, OH, OW):
    # x (C, H, W) one image -> col (C*KH*KW, OH*OW)
    # col[(c, i, j), oh*OW + ow] = x_padded[c, oh*stride + i, ow*stride + j]   (zero in the padding)
    C, H, W = x.shape
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                row = col[(c * kh + i) * kw + j]
                lo, hi = _tap_range(W, OW, j, stride, pad)
                for oh in range(OH):
                    h = oh * stride + i - pad
                    dst = row[oh * OW:(oh + 1) * OW]
                    if h < 0 or h >= H:
                        dst[:] = 0.0
                        continue
                    src = x[c, h]
                    for ow in range(lo):
                        dst[ow] = 0.0
                    for ow in range(lo, hi):
                        dst[ow] = src[ow * stride + j - pad]
                    for ow in range(hi, OW):
                        dst[ow] = 0.0


@njit(cache=True)
def add_columns_image(dx, col, kh, kw, stride, pad, OH, OW):
    # col (C*KH*KW, OH*OW) -> dx (C, H, W), zeroed first: the adjoint of columns_image
    # dx_padded[c, oh*stride + i, ow*stride + j] += col[(c, i, j), oh*OW + ow]
    C, H, W = dx.shape
    dx[:] = 0.0
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                row = col[(c * kh + i) * kw + j]
                lo, hi = _tap_range(W, OW, j, stride, pad)
                for oh in range(OH):
                    h = oh * stride + i - pad
                    if h < 0 or h >= H:
                        continue
                    src, dst = row[oh * OW:(oh + 1) * OW], dx[c, h]
                    for ow in range(lo, hi):
                        dst[ow * stride + j - pad] += src[ow]


@njit(cache=True)
def pad_image(xp, x, pad):
    # x (C, H, W) -> xp (C, H + 2 pad, W + 2 pad), zeros around
    C, H, W = x.shape
    if pad > 0:
        xp[:] = 0.0
    for c in range(C):
        for h in range(H):
            xp[c, h + pad, pad:pad + W] = x[c, h]


@njit(cache=True)
def wide_columns_image(col, xp, kh, kw):
    # xp (C, Hp, Wp) one padded image -> col (C*KH*KW, L), stride 1, L = (OH - 1)*Wp + OW
    # col[(c, i, j), q] = xp.reshape(C, Hp*Wp)[c, i*Wp + j + q]: wide output pixel q = oh*Wp + ow
    C, Hp, Wp = xp.shape
    L = col.shape[1]
    for c in range(C):
        x_flat = xp[c].reshape(Hp * Wp)
        for i in range(kh):
            for j in range(kw):
                col[(c * kh + i) * kw + j, :] = x_flat[i * Wp + j:i * Wp + j + L]


@njit(cache=True)
def add_wide_columns_image(dxp, col, kh, kw):
    # col (C*KH*KW, L) -> dxp (C, Hp, Wp), zeroed first: the adjoint of wide_columns_image
    # dxp.reshape(C, Hp*Wp)[c, i*Wp + j + q] += col[(c, i, j), q]
    C, Hp, Wp = dxp.shape
    L = col.shape[1]
    dxp[:] = 0.0
    for c in range(C):
        dx_flat = dxp[c].reshape(Hp * Wp)
        for i in range(kh):
            for j in range(kw):
                dst, src = dx_flat[i * Wp + j:i * Wp + j + L], col[(c * kh + i) * kw + j]
                for q in range(L):
                    dst[q] += src[q]


@njit(cache=True, parallel=True)
def _forward_wide(y, x, W2, b, kh, kw, pad, xps, cols, ys):
    # x (N, C, H, W), W2 (F, C*KH*KW), b (F,) -> y (N, F, OH, OW), stride 1;
    # per thread t: xps[t] (C, Hp, Wp), cols[t] (K, L), ys[t] (F, L) scratch
    N, F, OH, OW = y.shape
    T, Wp = cols.shape[0], xps.shape[3]
    for t in prange(T):
        xp, col, y_wide = xps[t], cols[t], ys[t]
        for n in range(t * N // T, (t + 1) * N // T):
            pad_image(xp, x[n], pad)
            wide_columns_image(col, xp, kh, kw)
            # y_wide = W2 @ col; y[n, f, oh, ow] = y_wide[f, oh*Wp + ow] + b[f]
            gemm(y_wide, W2, col)
            for f in range(F):
                for oh in range(OH):
                    src, dst = y_wide[f, oh * Wp:oh * Wp + OW], y[n, f, oh]
                    for ow in range(OW):
                        dst[ow] = src[ow] + b[f]


@njit(cache=True, parallel=True)
def _backward_wide(dW_parts, db_parts, dx, dy, x, W2, kh, kw, pad, xps, cols, dys, need_dx):
    # dy (N, F, OH, OW), x (N, C, H, W), W2 (F, K) -> dW_parts (T, F, K), db_parts (T, F) per
    # thread, and dx (N, C, H, W) if need_dx; stride 1. Per thread t: xps[t] (C, Hp, Wp),
    # cols[t] (K, L), dys[t] (F, L) scratch. dy is laid out wide with zeros in the Wp - OW
    # columns between rows, so those columns add nothing to dW or dx.
    N, F, OH, OW = dy.shape
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    T, Wp = cols.shape[0], xps.shape[3]
    for t in prange(T):
        xp, col, dy_wide, dWt, dbt = xps[t], cols[t], dys[t], dW_parts[t], db_parts[t]
        dWt[:] = 0.0
        dbt[:] = 0.0
        dy_wide[:] = 0.0
        for n in range(t * N // T, (t + 1) * N // T):
            # dy_wide[f, oh*Wp + ow] = dy[n, f, oh, ow]; db_t += dy[n].sum(axis=(1, 2))
            for f in range(F):
                s = np.float32(0.0)
                for oh in range(OH):
                    src, dst = dy[n, f, oh], dy_wide[f, oh * Wp:oh * Wp + OW]
                    for ow in range(OW):
                        dst[ow] = src[ow]
                        s += src[ow]
                dbt[f] += s
            pad_image(xp, x[n], pad)
            wide_columns_image(col, xp, kh, kw)
            # dW_t += dy_wide @ col.T
            gemm(dWt, dy_wide, col, 1.0, 1.0, False, True)
            if need_dx:
                # col = W2.T @ dy_wide (the columns are rebuilt for the next image anyway);
                # dx[n] = col2im(col), cropped out of the padded plane
                gemm(col, W2, dy_wide, 1.0, 0.0, True, False)
                add_wide_columns_image(xp, col, kh, kw)
                for c in range(C):
                    for h in range(H):
                        dx[n, c, h, :] = xp[c, h + pad, pad:pad + W]


@njit(cache=True, parallel=True)
def _forward(y, x, W2, b, kh, kw, stride, pad, cols):
    # x (N, C, H, W), W2 (F, C*KH*KW), b (F,) -> y (N, F, OH*OW); cols (T, C*KH*KW, OH*OW) scratch
    N, F, T = x.shape[0], W2.shape[0], cols.shape[0]
    OH, OW = (x.shape[2] + 2 * pad - kh) // stride + 1, (x.shape[3] + 2 * pad - kw) // stride + 1
    for t in prange(T):
        col = cols[t]
        for n in range(t * N // T, (t + 1) * N // T):
            columns_image(col, x[n], kh, kw, stride, pad, OH, OW)
            # y[n] = W2 @ col + b[:, None]
            yn = y[n]
            for f in range(F):
                yn[f, :] = b[f]
            gemm(yn, W2, col, 1.0, 1.0)


@njit(cache=True, parallel=True)
def _backward(dW_parts, db_parts, dx, dy, x, W2, kh, kw, stride, pad, cols, dcols, need_dx):
    # dy (N, F, OH*OW), x (N, C, H, W), W2 (F, K) -> dW_parts (T, F, K), db_parts (T, F) per
    # thread, and dx (N, C, H, W) if need_dx; cols, dcols (T, K, OH*OW) scratch
    N, F, T = x.shape[0], W2.shape[0], cols.shape[0]
    OH, OW = (x.shape[2] + 2 * pad - kh) // stride + 1, (x.shape[3] + 2 * pad - kw) // stride + 1
    for t in prange(T):
        col, dcol, dWt, dbt = cols[t], dcols[t], dW_parts[t], db_parts[t]
        dWt[:] = 0.0
        dbt[:] = 0.0
        for n in range(t * N // T, (t + 1) * N // T):
            columns_image(col, x[n], kh, kw, stride, pad, OH, OW)
            # dW_t += dy[n] @ col.T
            gemm(dWt, dy[n], col, 1.0, 1.0, False, True)
            # db_t += dy[n].sum(axis=1)
            for f in range(F):
                dbt[f] += dy[n, f].sum()
            if need_dx:
                # dcol = W2.T @ dy[n]; dx[n] = col2im(dcol)
                gemm(dcol, W2, dy[n], 1.0, 0.0, True, False)
                add_columns_image(dx[n], dcol, kh, kw, stride, pad, OH, OW)


def _wide_length(OH, OW, Wp):
    return (OH - 1) * Wp + OW


def forward(x, W, b, stride, pad, n_threads, scratch):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) float32 contiguous -> y (N, F, OH, OW)
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = output_size(H, KH, stride, pad), output_size(Wd, KW, stride, pad)
    T = max(1, min(n_threads, N))
    K = C * KH * KW
    y = np.empty((N, F, OH, OW), np.float32)
    if stride == 1:
        Hp, Wp = H + 2 * pad, Wd + 2 * pad
        L = _wide_length(OH, OW, Wp)
        _forward_wide(y, x, W.reshape(F, K), b, KH, KW, pad, scratch("im2col.xp", (T, C, Hp, Wp)),
                      scratch("im2col.cols", (T, K, L)), scratch("im2col.ys", (T, F, L)))
    else:
        _forward(y.reshape(N, F, OH * OW), x, W.reshape(F, K), b, KH, KW, stride, pad,
                 scratch("im2col.cols", (T, K, OH * OW)))
    return y


def backward(dy, x, W, stride, pad, need_dx, n_threads, scratch):
    # dy (N, F, OH, OW), x (N, C, H, W), W (F, C, KH, KW) -> (dx or None, dW, db)
    N, F, OH, OW = dy.shape
    _, C, KH, KW = W.shape
    K = C * KH * KW
    T = max(1, min(n_threads, N))
    dW_parts, db_parts = np.empty((T, F, K), np.float32), np.empty((T, F), np.float32)
    dx = np.empty(x.shape, np.float32) if need_dx else x  # x: an untouched stand-in
    if stride == 1:
        Hp, Wp = x.shape[2] + 2 * pad, x.shape[3] + 2 * pad
        L = _wide_length(OH, OW, Wp)
        _backward_wide(dW_parts, db_parts, dx, dy, x, W.reshape(F, K), KH, KW, pad,
                       scratch("im2col.xp", (T, C, Hp, Wp)), scratch("im2col.cols", (T, K, L)),
                       scratch("im2col.ys", (T, F, L)), need_dx)
    else:
        cols = scratch("im2col.cols", (T, K, OH * OW))
        dcols = scratch("im2col.dcols", (T, K, OH * OW)) if need_dx else cols  # untouched stand-in
        _backward(dW_parts, db_parts, dx, dy.reshape(N, F, OH * OW), x, W.reshape(F, K),
                  KH, KW, stride, pad, cols, dcols, need_dx)
    # dW = dW_parts.sum(axis=0), in thread order
    return (dx if need_dx else None), dW_parts.sum(axis=0).reshape(W.shape), db_parts.sum(axis=0)


# ------------------------------------------------- the contract's im2col / col2im (whole batch)

@njit(cache=True, parallel=True)
def _im2col(col, x, kh, kw, stride, pad, OH, OW):
    # x (N, C, H, W) -> col (N, OH*OW, C*KH*KW): the transpose of columns_image, image by image
    for n in prange(x.shape[0]):
        colT = np.empty((col.shape[2], col.shape[1]), np.float32)
        columns_image(colT, x[n], kh, kw, stride, pad, OH, OW)
        col[n] = colT.T


@njit(cache=True, parallel=True)
def _col2im(dx, col, kh, kw, stride, pad, OH, OW):
    # col (N, OH*OW, C*KH*KW) -> dx (N, C, H, W), overlapping windows summed
    for n in prange(dx.shape[0]):
        add_columns_image(dx[n], np.ascontiguousarray(col[n].T), kh, kw, stride, pad, OH, OW)


def im2col(x, kh, kw, stride, pad):
    # x (N, C, H, W) -> col (N*OH*OW, C*KH*KW), rows ordered (n, oh, ow), columns (c, i, j)
    N, C, H, W = x.shape
    OH, OW = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    col = np.empty((N, OH * OW, C * kh * kw), np.float32)
    _im2col(col, np.ascontiguousarray(x, dtype=np.float32), kh, kw, stride, pad, OH, OW)
    return col.reshape(N * OH * OW, C * kh * kw)


def col2im(col, x_shape, kh, kw, stride, pad):
    # col (N*OH*OW, C*KH*KW) -> x (N, C, H, W), overlapping windows summed
    N, C, H, W = x_shape
    OH, OW = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    dx = np.empty(tuple(x_shape), np.float32)
    _col2im(dx, np.ascontiguousarray(col, dtype=np.float32).reshape(N, OH * OW, C * kh * kw),
            kh, kw, stride, pad, OH, OW)
    return dx
