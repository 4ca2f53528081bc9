"""Fused layer chains with Numba: each one parallel region, the intermediate activations
never written whole. What they compute is fastnn/backends/composed.py.

* dense + bias + ReLU: each thread's block of rows gets its bias, sgemm and ReLU while in
  cache. Backward: every thread masks the whole (N, M) gradient into its own buffer (N*M is
  small: 100 x 100 for these nets, cheaper than a second parallel region to share it), then
  computes its block of dx, dW and db as dense_backward does.
* conv + bias + ReLU (+ 2x2 max-pool), for the algorithms that have it built in
  (fastnn/backends/numba/conv/epilogue.py): im2col at stride 1, direct and Winograd (every layer
  of the named nets); strided layers run the composition. With the pool, forward writes only the pooled output and its argmax; backward
  rebuilds each image's output gradient from them in a small per-thread buffer.
"""
import sys

import numba
import numpy as np
from numba import njit, prange

from ..composed import fused_kernels
from ._common import FAST, PRANGE, f32, scratch
from .conv import WINOGRAD_TILE, conv2d_algorithm, direct, per_image, winograd
from .conv.epilogue import RELU, RELU_POOL
from .dense import backward_block, column_chunk, forward_block

_composed = fused_kernels(sys.modules[__package__])


# ------------------------------------------------------------------------------ dense

@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _dense_relu_forward(y, x, W, b, T):
    # x (N, D), W (D, M), b (M,) -> y (N, M) = relu(x @ W + b); T blocks of rows
    N = x.shape[0]
    for t in prange(T):
        forward_block(y, x, W, b, t * N // T, (t + 1) * N // T, True)


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _dense_relu_backward(dx, dW, db, dz, dy, x, W, y, chunk, need_dx):
    # dy, y (N, M) -> dx (N, D) (if need_dx), dW (D, M), db (M,); dz (T, N, M) per-thread buffers
    T = dz.shape[0]
    for t in prange(T):
        # dz[t] = dy * (y > 0)
        for n in range(dy.shape[0]):
            for m in range(dy.shape[1]):
                dz[t, n, m] = dy[n, m] * np.float32(y[n, m] > 0.0)
        backward_block(dx, dW, db, dz[t], x, W, t, T, chunk, need_dx)


def dense_relu_forward(x, W, b):
    # x (N, D), W (D, M), b (M,) -> y (N, M)
    x, W, b = f32(x), f32(W), f32(b)
    y = np.empty((x.shape[0], W.shape[1]), np.float32)
    _dense_relu_forward(y, x, W, b, numba.get_num_threads())
    return y


def dense_relu_backward(dy, x, W, y, need_dx=True):
    # dy, y (N, M), x (N, D), W (D, M) -> dx (N, D) or None, dW (D, M), db (M,)
    dy, x, W, y = f32(dy), f32(x), f32(W), f32(y)
    T = numba.get_num_threads()
    dx = np.empty_like(x) if need_dx else x  # x: an untouched stand-in of the right type
    dW, db = np.empty_like(W), np.empty(W.shape[1], np.float32)
    _dense_relu_backward(dx, dW, db, scratch("dense_relu.dz", (T,) + dy.shape), dy, x, W, y,
                         column_chunk(*dy.shape), need_dx)
    return (dx if need_dx else None), dW, db


# ------------------------------------------------------------------------------- conv

def _conv_forward(name, post, x, W, b, stride, pad):
    x, W, b = f32(x), f32(W), f32(b)
    algorithm = conv2d_algorithm(x.shape, W.shape, stride, pad)
    if algorithm == "direct":
        y, xp, arg = direct.forward(x, W, b, pad, post)
        return y, (algorithm, xp, W, pad, y, arg)
    if algorithm in WINOGRAD_TILE:
        y, arg = winograd.fused_forward(x, W, b, pad, numba.get_num_threads(), WINOGRAD_TILE[algorithm], post)
        return y, (algorithm, x, W, pad, y, arg)
    if algorithm == "im2col" and stride == 1:
        y, arg = per_image.forward(x, W, b, stride, pad, numba.get_num_threads(), scratch, post)
        return y, (algorithm, x, W, pad, y, arg)
    y, cache = _composed[name + "_forward"](x, W, b, stride, pad)
    return y, ("composed", cache)


def _conv_backward(name, post, dy, cache, need_dx):
    algorithm = cache[0]
    if algorithm == "composed":
        return _composed[name + "_backward"](dy, cache[1], need_dx=need_dx)
    _, x, W, pad, y, arg = cache
    if algorithm == "direct":
        return direct.backward(f32(dy), x, W, pad, need_dx, post, arg, y)
    if algorithm == "im2col":
        return per_image.backward(f32(dy), x, W, 1, pad, need_dx, numba.get_num_threads(), scratch, post, arg, y)
    return winograd.backward(f32(dy), x, W, pad, need_dx, numba.get_num_threads(), WINOGRAD_TILE[algorithm],
                             post, arg, y)


def conv2d_relu_forward(x, W, b, stride, pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW) = relu(conv2d(x))
    return _conv_forward("conv2d_relu", RELU, x, W, b, stride, pad)


def conv2d_relu_backward(dy, cache, need_dx=True):
    # dy (N, F, OH, OW) -> dx (N, C, H, W) or None, dW (F, C, KH, KW), db (F,)
    return _conv_backward("conv2d_relu", RELU, dy, cache, need_dx)


def conv2d_relu_pool_forward(x, W, b, stride, pad):
    # x (N, C, H, W) -> y (N, F, OH // 2, OW // 2) = maxpool2x2(relu(conv2d(x)))
    return _conv_forward("conv2d_relu_pool", RELU_POOL, x, W, b, stride, pad)


def conv2d_relu_pool_backward(dy, cache, need_dx=True):
    # dy (N, F, OH // 2, OW // 2) -> dx (N, C, H, W) or None, dW (F, C, KH, KW), db (F,)
    return _conv_backward("conv2d_relu_pool", RELU_POOL, dy, cache, need_dx)
