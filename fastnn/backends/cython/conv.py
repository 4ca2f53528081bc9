"""Convolution: im2col + BLAS (direct loops for few input channels when enabled below).
Mirrors ../numpy/conv.py via fastnn_ext/_conv.pyx (whose docstring explains both ways).
"""
import numpy as np

from fastnn_ext import _conv

from ..numpy.conv import output_size
from ._prep import Recycled, floats, work

# Input channels up to which the direct convolution is used. 0: never, measured. A portable
# build compiles the direct loops for baseline x86-64 (SSE2, 4 floats at a time), while
# BLAS picks AVX2/AVX-512 kernels at run time, so even the 1-channel first layer is faster
# as im2col + GEMM here (simple-cnn conv1 forward 2.9 ms vs 25 ms direct, 1 thread).
# The direct kernels stay, tested (tests/backends/test_cython_ext.py), for builds with
# CFLAGS=-march=native, where they may win: set this to 1 to try.
DIRECT_MAX_CHANNELS = 0

def im2col(x, kh, kw, stride, pad):
    # x (N, C, H, W) -> col (N*OH*OW, C*KH*KW), rows ordered (n, oh, ow), columns (c, i, j)
    (x,) = floats(x)
    N, C, H, W = x.shape
    OH, OW = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    col = np.empty((N * OH * OW, C * kh * kw), dtype=x.dtype)
    _conv.im2col(col, x, kh, kw, stride, pad)
    return col


def col2im(col, x_shape, kh, kw, stride, pad):
    # col (N*OH*OW, C*KH*KW) -> x (N, C, H, W), overlapping windows summed
    (col,) = floats(col)
    dx = np.empty(tuple(x_shape), dtype=col.dtype)
    _conv.col2im(dx, col, kh, kw, stride, pad)
    return dx


def conv2d_forward(x, W, b, stride, pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)
    x, W, b = floats(x, W, b)
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = output_size(H, KH, stride, pad), output_size(Wd, KW, stride, pad)
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    if C <= DIRECT_MAX_CHANNELS:
        _conv.conv2d_forward_direct(y, x, W, b, stride, pad)
        return y, ("direct", x, W, stride, pad)
    # one GEMM per image, y[n] = [W | b] @ colT[n], written as NCHW (see fastnn_ext/_conv.pyx)
    colT = Recycled((C * KH * KW + 1, N * OH * OW), x.dtype)  # kept for the backward pass
    W_ext = work("W_ext", (F, C * KH * KW + 1), x.dtype)
    _conv.conv2d_forward_images(y.reshape(N, F, OH * OW), colT.array, W_ext, x,
                                W.reshape(F, -1), b, KH, KW, stride, pad)
    return y, ("images", x.shape, colT, W, stride, pad)


def conv2d_backward(dy, cache, need_dx=True):
    # dy (N, F, OH, OW) -> dx (N, C, H, W) or None, dW (F, C, KH, KW), db (F,)
    how, *rest = cache
    W = rest[1] if how == "direct" else rest[2]
    dy = np.ascontiguousarray(dy, dtype=W.dtype)
    N, F, OH, OW = dy.shape
    dW, db = np.empty_like(W), np.empty(F, dtype=W.dtype)
    if how == "direct":
        x, W, stride, pad = rest
        acc = work("acc", (F, W[0].size + 1, OW), W.dtype)  # per-filter partial sums
        _conv.conv2d_weight_grad_direct(dW, db, acc, dy, x, stride, pad)
        if not need_dx:
            return None, dW, db
        dx = np.empty_like(x)
        _conv.conv2d_input_grad_direct(dx, dy, W, stride, pad)
        return dx, dW, db
    x_shape, colT, W, stride, pad = rest
    _, _, KH, KW = W.shape
    dy3 = dy.reshape(N, F, OH * OW)
    dW_ext = work("dW_ext", (F, W[0].size + 1), W.dtype)
    _conv.conv2d_weight_grad_images(dW.reshape(F, -1), db, dW_ext, dy3, colT.array)
    if not need_dx:
        return None, dW, db
    dx = np.empty(x_shape, dtype=W.dtype)
    dcolT = work("dcolT", (W[0].size, N * OH * OW), W.dtype)
    _conv.conv2d_input_grad_images(dx, dcolT, dy3, W.reshape(F, -1), KH, KW, stride, pad)
    return dx, dW, db
