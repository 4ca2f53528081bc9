"""Fused layer chains: dense + bias + ReLU, convolution + bias + ReLU (+ 2x2 max-pool), each in one
pass, one OpenMP parallel region, without writing the intermediate activations to memory. What
they compute is the composition of the unfused kernels, fastnn/backends/composed.py (their
specification); the kernels are in fastnn_ext/_dense.pyx,
_conv.pyx and _winograd.pyx, their shared epilogues in fastnn_ext/_epilogue.pxd.

==========================  ====================================================================
kernel                      how
==========================  ====================================================================
dense_relu_forward          each thread's row block: sgemm, then bias + ReLU while in cache
dense_relu_backward         each thread: all of dz = dy * (y > 0) (small) into its own scratch,
                            then its blocks of dx, dW, db (as dense_backward splits them)
conv2d_relu[_pool]_forward  every algorithm (im2col, winograd, winograd4): bias + ReLU (+ pool)
                            in the epilogue, where the algorithm writes its output (im2col:
                            after the image's sgemm; Winograd: from the output transform's
                            rows). With the pool only y (N, F, OH//2, OW//2) and one int32 per
                            window (its winner, and whether the ReLU blocks it) reach memory
conv2d_relu[_pool]_backward the threads split the batch by whole images; each builds its own
                            images' gradient at z (unpooled, ReLU-masked) into a reused buffer
                            and runs the algorithm's weight- and input-gradient work on it
==========================  ====================================================================

NaN and infinities go where the composition sends them (fastnn_ext/_epilogue.pxd): a NaN stays NaN
through the ReLU and wins its pooling window, and an infinite dy where the ReLU blocks is NaN.
"""
import numpy as np

from fastnn_ext import _conv, _dense

from ..numpy.conv import output_size
from . import winograd
from ._prep import floats, work
from .conv import WINOGRAD_TILE, ConvCache, conv2d_algorithm


# ------------------------------------------------------------------------------- dense

def dense_relu_forward(x, W, b):
    # x (N, D), W (D, M), b (M,) -> y (N, M) = relu(x @ W + b)
    x, W, b = floats(x, W, b)
    y = np.empty((x.shape[0], W.shape[1]), dtype=x.dtype)
    _dense.dense_relu_forward(y, x, W, b)
    return y


def dense_relu_backward(dy, x, W, y, need_dx=True):
    # dy, y (N, M) -> (dx (N, D) or None, dW (D, M), db (M,))
    dy, x, W, y = floats(dy, x, W, y)
    (N, D), M = x.shape, W.shape[1]
    dx = np.empty_like(x) if need_dx else np.empty((0, 0), x.dtype)  # need_dx False: untouched
    dW, db = np.empty_like(W), np.empty(M, dtype=W.dtype)
    T = _dense.team_size(N * M * D)
    dz_parts = work("dense.dz", (T, N, M), x.dtype)  # one dz = dy * (y > 0) per thread
    _dense.dense_relu_backward(dx, dW, db, dz_parts, dy, x, W, y, need_dx)
    return (dx if need_dx else None), dW, db


# -------------------------------------------------------------------------- convolution
# cache: conv.ConvCache with y, the forward output (ReLU only), or arg, the windows' winners (with
# the pool)

def conv2d_relu_forward(x, W, b, stride, pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW) = relu(conv2d(x))
    return _conv_relu_forward(x, W, b, stride, pad, pool=False)


def conv2d_relu_pool_forward(x, W, b, stride, pad):
    # x (N, C, H, W) -> y (N, F, OH // 2, OW // 2) = maxpool2x2(relu(conv2d(x)))
    return _conv_relu_forward(x, W, b, stride, pad, pool=True)


def conv2d_relu_backward(dy, cache, need_dx=True):
    # dy (N, F, OH, OW) -> dx (N, C, H, W) or None, dW (F, C, KH, KW), db (F,)
    return _conv_relu_backward(dy, cache, need_dx)


def conv2d_relu_pool_backward(dy, cache, need_dx=True):
    # dy (N, F, OH // 2, OW // 2) -> dx (N, C, H, W) or None, dW (F, C, KH, KW), db (F,)
    return _conv_relu_backward(dy, cache, need_dx)


def _conv_relu_forward(x, W, b, stride, pad, pool):
    x, W, b = floats(x, W, b)
    algorithm = conv2d_algorithm(x.shape, W.shape, stride, pad)
    if algorithm in WINOGRAD_TILE:
        y, arg = winograd.forward_relu(x, W, b, pad, pool, m=WINOGRAD_TILE[algorithm])
        return y, ConvCache(algorithm, x, W, stride, pad, y=None if pool else y, arg=arg)
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = output_size(H, KH, stride, pad), output_size(Wd, KW, stride, pad)
    K, P = C * KH * KW, OH * OW
    T = _conv.team_size(N * F * K * P, N)
    cols = work("cols", (T, K, P), x.dtype)  # one image's columns per thread
    if not pool:
        y = np.empty((N, F, OH, OW), dtype=x.dtype)
        _conv.conv2d_relu_forward(y.reshape(N, F, P), cols, x, W.reshape(F, K), b, KH, KW,
                                  stride, pad)
        return y, ConvCache("im2col", x, W, stride, pad, y=y)
    y = np.empty((N, F, OH // 2, OW // 2), dtype=x.dtype)
    arg = np.empty(y.shape, dtype=np.int32)
    z = work("z", (T, F, P), x.dtype)  # one image's convolution per thread, pooled from cache
    _conv.conv2d_relu_pool_forward(y, arg, z, cols, x, W.reshape(F, K), b, KH, KW, stride, pad)
    return y, ConvCache("im2col", x, W, stride, pad, arg=arg)


def _conv_relu_backward(dy, cache, need_dx):
    algorithm, x, W, stride, pad, y, arg = cache
    dy = np.ascontiguousarray(dy, dtype=W.dtype)
    if algorithm in WINOGRAD_TILE:
        return winograd.backward_relu(dy, x, W, pad, y=y, arg=arg, need_dx=need_dx,
                                      m=WINOGRAD_TILE[algorithm])
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = output_size(H, KH, stride, pad), output_size(Wd, KW, stride, pad)
    K, P = C * KH * KW, OH * OW
    dW, db = np.empty_like(W), np.empty(F, dtype=W.dtype)
    dx = np.empty_like(x) if need_dx else np.empty((0, 0, 0, 0), W.dtype)  # False: untouched
    T = _conv.team_size(N * F * K * P, N)
    cols = work("cols", (T, K, P), W.dtype)  # one image's columns per thread, then its dcol
    dz = work("dz", (T, F, P), W.dtype)      # one image's gradient at z per thread
    dW_parts, db_parts = work("dW_parts", (T, F, K), W.dtype), work("db_parts", (T, F), W.dtype)
    no_y, no_arg = np.empty((0, 0, 0, 0), W.dtype), np.empty((0, 0, 0, 0), np.int32)
    _conv.conv2d_relu_backward(dx, dW.reshape(F, K), db, cols, dz, dW_parts, db_parts, dy,
                               no_y if y is None else y, no_arg if arg is None else arg, x,
                               W.reshape(F, K), KH, KW, stride, pad, need_dx)
    return (dx if need_dx else None), dW, db
