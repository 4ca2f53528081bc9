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
from .._common import FAST, PRANGE
from ..blas import gemm
from .epilogue import PLAIN, RELU, RELU_POOL, pool_image, relu_inplace, relu_mask_row, unpool_image


@njit(cache=True, inline="always")
def _tap_range(size, out, k, stride, pad):
    # the outputs o, lo <= o < hi, whose input o*stride + k - pad lies in 0..size-1: the part
    # of a row that filter tap k reads without falling into the zero padding
    first, last = pad - k, size - 1 + pad - k
    lo = 0 if first <= 0 else (first + stride - 1) // stride
    hi = 0 if last < 0 else min(last // stride + 1, out)
    return min(lo, hi), hi


@njit(cache=True, fastmath=FAST)
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
                        for ow in range(OW):
                            dst[ow] = 0.0
                        continue
                    for ow in range(lo):
                        dst[ow] = 0.0
                    if stride == 1:  # a contiguous copy, slices from 0 so that it vectorises
                        src, part = x[c, h, lo + j - pad:hi + j - pad], dst[lo:hi]
                        for q in range(hi - lo):
                            part[q] = src[q]
                    else:
                        src = x[c, h]
                        for ow in range(lo, hi):
                            dst[ow] = src[ow * stride + j - pad]
                    for ow in range(hi, OW):
                        dst[ow] = 0.0


@njit(cache=True, fastmath=FAST)
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
                    if stride == 1:
                        src, dst = row[oh * OW + lo:oh * OW + hi], dx[c, h, lo + j - pad:hi + j - pad]
                        for q in range(hi - lo):
                            dst[q] += src[q]
                    else:
                        src, dst = row[oh * OW:(oh + 1) * OW], dx[c, h]
                        for ow in range(lo, hi):
                            dst[ow * stride + j - pad] += src[ow]


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _forward(y, arg, x, W2, b, kh, kw, stride, pad, post, cols, ys):
    # x (N, C, H, W), W2 (F, C*KH*KW), b (F,) -> y (N, F, OH, OW); post RELU: relu(y); RELU_POOL:
    # y (N, F, OH // 2, OW // 2) = maxpool2x2(relu(conv)) and arg its argmax, from the image's
    # output in cache (epilogue.py). Per thread t: cols[t] (K, OH*OW), ys[t] (F, OH*OW) scratch
    N, F, T = x.shape[0], W2.shape[0], cols.shape[0]
    OH, OW = (x.shape[2] + 2 * pad - kh) // stride + 1, (x.shape[3] + 2 * pad - kw) // stride + 1
    for t in prange(T):
        col = cols[t]
        for n in range(t * N // T, (t + 1) * N // T):
            columns_image(col, x[n], kh, kw, stride, pad, OH, OW)
            if post == RELU_POOL:
                # z = W2 @ col (F, OH*OW) in cache; y[n] = maxpool2x2(relu(z + b[:, None]))
                z = ys[t]
                gemm(z, W2, col)
                pool_image(y[n], arg[n], z.reshape(z.size), OW, OH, b)
            else:
                # y[n] = b[:, None]; y[n] += W2 @ col (then ReLU, in place)
                yn = y[n].reshape(F, OH * OW)
                for f in range(F):
                    yn[f, :] = b[f]
                gemm(yn, W2, col, 1.0, 1.0)
                if post == RELU:
                    for f in range(F):
                        relu_inplace(yn[f])


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _backward(dW_parts, db_parts, dx, dy, arg, y, x, W2, kh, kw, stride, pad, post, cols, dzs, need_dx):
    # dy (N, F, OH, OW), x (N, C, H, W), W2 (F, K) -> dW_parts (T, F, K), db_parts (T, F) per
    # thread, and dx (N, C, H, W) if need_dx. post RELU: dy is masked by y > 0 (y the forward
    # output); RELU_POOL: dy, arg, y are the pooled output's, unpooled here. Per thread t:
    # cols[t] (K, OH*OW) and dzs[t] (F, OH*OW) scratch (the gradient at the conv's output)
    N, F, T = x.shape[0], W2.shape[0], cols.shape[0]
    OH, OW = (x.shape[2] + 2 * pad - kh) // stride + 1, (x.shape[3] + 2 * pad - kw) // stride + 1
    for t in prange(T):
        col, dWt, dbt = cols[t], dW_parts[t], db_parts[t]
        dWt[:] = 0.0
        dbt[:] = 0.0
        for n in range(t * N // T, (t + 1) * N // T):
            # dz (F, OH*OW): the gradient at the convolution's output for image n
            if post == PLAIN:
                dz = dy[n].reshape(F, OH * OW)
            else:
                dz = dzs[t]
                if post == RELU_POOL:
                    unpool_image(dz.reshape(dz.size), OW, OH, dy[n], arg[n])
                else:
                    relu_mask_row(dz.reshape(dz.size), dy[n].reshape(dz.size), y[n].reshape(dz.size))
            # db_t += dz.sum(axis=1); dW_t += dz @ col.T
            for f in range(F):
                # dbt[f] += dz[f].sum(), a loop compiled with fastmath: Numba's own sum adds one
                # element after another (no reassociation), which costs more than the sgemm here
                row = dz[f]
                s = np.float32(0.0)
                for p in range(OH * OW):
                    s += row[p]
                dbt[f] += s
            columns_image(col, x[n], kh, kw, stride, pad, OH, OW)
            gemm(dWt, dz, col, 1.0, 1.0, False, True)
            if need_dx:
                # col = W2.T @ dz (the columns are rebuilt for the next image anyway); dx[n] = col2im(col)
                gemm(col, W2, dz, 1.0, 0.0, True, False)
                add_columns_image(dx[n], col, kh, kw, stride, pad, OH, OW)


def forward(x, W, b, stride, pad, n_threads, scratch, post=PLAIN):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) float32 contiguous -> (y (N, F, OH, OW), arg);
    # post RELU / RELU_POOL: see _forward; arg is empty unless RELU_POOL
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = output_size(H, KH, stride, pad), output_size(Wd, KW, stride, pad)
    T = max(1, min(n_threads, N))
    K = C * KH * KW
    shape = (N, F, OH // 2, OW // 2) if post == RELU_POOL else (N, F, OH, OW)
    y = np.empty(shape, np.float32)
    arg = np.empty(shape if post == RELU_POOL else (0, 0, 0, 0), np.int32)
    _forward(y, arg, x, W.reshape(F, K), b, KH, KW, stride, pad, post, scratch("im2col.cols", (T, K, OH * OW)),
             scratch("im2col.ys", (T, F if post == RELU_POOL else 0, OH * OW)))
    return y, arg


def backward(dy, x, W, stride, pad, need_dx, n_threads, scratch, post=PLAIN, arg=None, y=None):
    # dy (N, F, OH, OW) (RELU_POOL: the pooled output's), x (N, C, H, W), W (F, C, KH, KW)
    # -> (dx or None, dW, db); y the forward output (RELU, RELU_POOL) and arg its argmax
    N, F = dy.shape[:2]
    _, C, KH, KW = W.shape
    OH, OW = output_size(x.shape[2], KH, stride, pad), output_size(x.shape[3], KW, stride, pad)
    K = C * KH * KW
    T = max(1, min(n_threads, N))
    dW_parts, db_parts = np.empty((T, F, K), np.float32), np.empty((T, F), np.float32)
    dx = np.empty(x.shape, np.float32) if need_dx else x  # x: an untouched stand-in
    arg = np.empty((0, 0, 0, 0), np.int32) if arg is None else arg
    _backward(dW_parts, db_parts, dx, dy, arg, dy if y is None else y, x, W.reshape(F, K), KH, KW, stride, pad,
              post, scratch("im2col.cols", (T, K, OH * OW)), scratch("im2col.dz", (T, F if post else 0, OH * OW)),
              need_dx)
    # dW = dW_parts.sum(axis=0), in thread order
    return (dx if need_dx else None), dW_parts.sum(axis=0).reshape(W.shape), db_parts.sum(axis=0)


# ------------------------------------------------- the contract's im2col / col2im (whole batch)

@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _im2col(col, x, kh, kw, stride, pad, OH, OW):
    # x (N, C, H, W) -> col (N, OH*OW, C*KH*KW): the transpose of columns_image, image by image
    for n in prange(x.shape[0]):
        colT = np.empty((col.shape[2], col.shape[1]), np.float32)
        columns_image(colT, x[n], kh, kw, stride, pad, OH, OW)
        for p in range(col.shape[1]):  # col[n] = colT.T (a loop: see dense.forward_block)
            for k in range(col.shape[2]):
                col[n, p, k] = colT[k, p]


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
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
