"""Convolution with Cython: the algorithms behind the contract, and the one function that
chooses between them per layer shape. Mirrors fastnn/backends/numba/conv/__init__.py; what
every algorithm computes is fastnn/backends/numpy/conv.py.

=============  ==================================================  ===========================
algorithm      what it does (kernels)                              where it applies
=============  ==================================================  ===========================
``im2col``     one image's columns in L2, one sgemm per image      any shape
               (fastnn_ext/_conv.pyx)
``winograd``   F(2x2, 3x3): 16 multiplies where im2col does 36     3x3, stride 1, pad <= 2
               (fastnn_ext/_winograd.pyx)
``winograd4``  F(4x4, 3x3): 36 multiplies where im2col does 144    3x3, stride 1, pad <= 2
=============  ==================================================  ===========================

``conv2d_algorithm`` is the choice (like cuDNN's algorithm choice): ``table_algorithm``, measured
on one machine, by default; with FASTNN_TUNE=1, the fastest of the algorithms that apply, timed on
this machine the first time a shape is used (fastnn/backends/tuning.py; cached on disk), and
``conv2d_choice`` says what was chosen and why. FASTNN_CONV_ALGO forces one algorithm wherever
it applies (tests run every algorithm that way), and the automatic choice stands where it does
not, or where this backend lacks it: numba's ``direct`` is not here (a Cython direct convolution
was, and lost to the best of these on every layer of the nets, 3-37x forward and 6-44x backward
in two runs; see table_algorithm). The cache (ConvCache) is opaque
to the layer: it names the algorithm, so backward runs the same one, and keeps x itself (not
columns).
"""
from typing import NamedTuple

import numpy as np

from fastnn_ext import _conv, _winograd

from .. import tuning
from ..numpy.conv import output_size
from . import winograd
from ._prep import floats, work

# The algorithms this backend implements (tests force each one with FASTNN_CONV_ALGO).
CONV_ALGORITHMS = ("im2col", "winograd", "winograd4")
WINOGRAD_TILE = {"winograd": 2, "winograd4": 4}  # m of F(m x m, 3x3)


class ConvCache(NamedTuple):
    """What a convolution's forward pass keeps for its backward pass (fused ones too)."""
    algorithm: str      # the algorithm forward ran: backward runs the same one
    x: np.ndarray       # the input itself: backward rebuilds the columns or tiles from it
    W: np.ndarray
    stride: int
    pad: int
    y: np.ndarray | None = None    # conv + ReLU: the forward output, whose y > 0 is the mask
    arg: np.ndarray | None = None  # conv + ReLU + pool: each window's winner (_epilogue.pxd)


def applies(algorithm, x_shape, w_shape, stride, pad):
    """Whether ``algorithm`` can compute this convolution."""
    if algorithm in WINOGRAD_TILE:
        return winograd.applies(x_shape, w_shape, stride, pad)
    return algorithm in CONV_ALGORITHMS


def table_algorithm(x_shape, w_shape, stride, pad):
    """The built-in table: the choice unless FASTNN_TUNE=1 times the candidates, measured
    on one machine (2 cores, AVX-512; BLAS 1 thread, OpenMP 2; portable build; forward ms,
    median, at the nets' batch sizes). Another machine may rank them otherwise: the tuner decides
    per machine.

    * 1 input channel (the first layers): im2col. pytorch-net conv1 0.35 ms, winograd 0.84
      (deep-cnn conv1: 0.26, 0.73). im2col's GEMM has an inner dimension of only 9 here, and
      still wins.
    * several channels, 3x3 stride 1: winograd, F(2x2, 3x3). pytorch-net conv2
      6.2 ms against im2col's 9.2; deep-cnn's other five: 1.0-2.5 ms against 1.4-4.8 (backward
      as fast as im2col for pytorch-net conv2, 1.2-1.7x faster for the rest). F(4x4, 3x3)
      ("winograd4", the numba backend's choice for 24x24 maps and up) is slower here than
      F(2x2): the portable build's transforms are 4-wide SSE2.
    * everything else (strides, other kernel sizes): im2col, which applies to any shape.

    A direct convolution (a vectorised multiply-add per filter tap along each output row, no
    im2col copy) was here too, and was deleted: at batch 100, forward / backward ms, medians of 7
    alternated runs, it took 5.3 / 15.2 against im2col's 0.88 / 1.33 on simple-cnn conv1 (1->30,
    5x5), 3.0 / 7.4 against 0.59 / 0.86 on pytorch-net conv1, 139 / 396 against winograd's
    10.3 / 29.0 on pytorch-net conv2, and 1.7-82 / 4.3-216 against the best's 0.53-3.1 /
    0.71-7.4 on deep-cnn's six layers: its rows are only 8-28 floats long, and every tap loads
    and stores the output row again.
    """
    if x_shape[1] > 1 and applies("winograd", x_shape, w_shape, stride, pad):
        return "winograd"
    return "im2col"


def _timed_step(algorithm, x, W, b, stride, pad, dy):
    # what the tuner times: one forward and one backward pass (dx and dW) of ``algorithm`` itself
    _, cache = _forward(algorithm, x, W, b, stride, pad)
    conv2d_backward(dy, cache)


_tuner = tuning.Tuner("cython", CONV_ALGORITHMS, applies, table_algorithm, _timed_step, _winograd.max_threads)
conv2d_choice = _tuner.choice        # (algorithm, source, ms): what a shape runs, and why (tuning.Choice)
conv2d_algorithm = _tuner.algorithm  # the contract's: forced -> only -> table, or tuned here


def conv2d_forward(x, W, b, stride, pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)
    x, W, b = floats(x, W, b)
    return _forward(conv2d_algorithm(x.shape, W.shape, stride, pad), x, W, b, stride, pad)


def _forward(algorithm, x, W, b, stride, pad):
    # x, W, b of one float dtype, C-contiguous -> y (N, F, OH, OW), cache; runs ``algorithm``
    cache = ConvCache(algorithm, x, W, stride, pad)
    if algorithm in WINOGRAD_TILE:
        return winograd.forward(x, W, b, pad, m=WINOGRAD_TILE[algorithm]), cache
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = output_size(H, KH, stride, pad), output_size(Wd, KW, stride, pad)
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    K, P = C * KH * KW, OH * OW
    T = _conv.team_size(N * F * K * P, N)
    cols = work("cols", (T, K, P), x.dtype)  # one image's columns per thread
    _conv.conv2d_forward(y.reshape(N, F, P), cols, x, W.reshape(F, K), b, KH, KW, stride, pad)
    return y, cache


def conv2d_backward(dy, cache, need_dx=True):
    # dy (N, F, OH, OW) -> dx (N, C, H, W) or None, dW (F, C, KH, KW), db (F,)
    x, W, stride, pad = cache.x, cache.W, cache.stride, cache.pad
    dy = np.ascontiguousarray(dy, dtype=W.dtype)
    if cache.algorithm in WINOGRAD_TILE:
        return winograd.backward(dy, x, W, pad, need_dx, m=WINOGRAD_TILE[cache.algorithm])
    N, F, OH, OW = dy.shape
    _, C, KH, KW = W.shape
    K, P = C * KH * KW, OH * OW
    dW, db = np.empty_like(W), np.empty(F, dtype=W.dtype)
    dx = np.empty_like(x) if need_dx else None
    dx_out = dx if need_dx else np.empty((0, 0, 0, 0), W.dtype)  # need_dx False: never touched
    T = _conv.team_size(N * F * K * P, N)
    cols = work("cols", (T, K, P), W.dtype)  # one image's columns per thread, then its dcol
    dW_parts, db_parts = work("dW_parts", (T, F, K), W.dtype), work("db_parts", (T, F), W.dtype)
    _conv.conv2d_backward(dx_out, dW.reshape(F, K), db, cols, dW_parts, db_parts,
                          dy.reshape(N, F, P), x, W.reshape(F, K), KH, KW, stride, pad, need_dx)
    return dx, dW, db


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
