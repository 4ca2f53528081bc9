"""Convolution by im2col + one matrix product (the textbook's Convolution layer).

im2col lays every receptive field out as a row, so the convolution becomes
``col @ W.reshape(F, -1).T``; col2im adds the rows back where they came from.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def windows(x, kh, kw, stride, pad, fill=0.0):
    """A read-only view (N, C, OH, OW, KH, KW) of every kh x kw window of x."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def add_windows(dwin, x_shape, stride, pad):
    """The adjoint of ``windows``: dwin (N, C, OH, OW, KH, KW) summed into (N, C, H, W)."""
    N, C, H, W = x_shape
    _, _, OH, OW, KH, KW = dwin.shape
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=dwin.dtype)
    for i in range(KH):  # one strided add per filter tap, as in the textbook
        for j in range(KW):
            dxp[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += dwin[:, :, :, :, i, j]
    return np.ascontiguousarray(dxp[:, :, pad:pad + H, pad:pad + W])


def im2col(x, kh, kw, stride, pad):
    # x (N, C, H, W) -> col (N*OH*OW, C*KH*KW), rows ordered (n, oh, ow), columns (c, i, j)
    N, C = x.shape[:2]
    win = windows(x, kh, kw, stride, pad)
    OH, OW = win.shape[2:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(N * OH * OW, C * kh * kw)


def col2im(col, x_shape, kh, kw, stride, pad):
    # col (N*OH*OW, C*KH*KW) -> x (N, C, H, W), overlapping windows summed
    N, C, H, W = x_shape
    OH, OW = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    dwin = col.reshape(N, OH, OW, C, kh, kw).transpose(0, 3, 1, 2, 4, 5)
    return add_windows(dwin, x_shape, stride, pad)


def conv2d_forward(x, W, b, stride, pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)
    N, _, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = output_size(H, KH, stride, pad), output_size(Wd, KW, stride, pad)
    col = im2col(x, KH, KW, stride, pad)
    y = col @ W.reshape(F, -1).T + b                          # (N*OH*OW, F)
    y = np.ascontiguousarray(y.reshape(N, OH, OW, F).transpose(0, 3, 1, 2))
    return y, (x.shape, col, W, stride, pad)


def conv2d_backward(dy, cache, need_dx=True):
    # dy (N, F, OH, OW) -> dx (N, C, H, W) or None, dW (F, C, KH, KW), db (F,)
    x_shape, col, W, stride, pad = cache
    F, _, KH, KW = W.shape
    dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, F)             # (N*OH*OW, F)
    db = dy2.sum(axis=0)
    dW = (dy2.T @ col).reshape(W.shape)
    dx = col2im(dy2 @ W.reshape(F, -1), x_shape, KH, KW, stride, pad) if need_dx else None
    return dx, dW, db


def conv2d_algorithm(x_shape, w_shape, stride, pad):
    """The reference has one algorithm: the textbook's whole-batch im2col and one matrix product.
    (fastnn/backends/numpy/winograd.py is the readable version of the Winograd algorithm.)"""
    return "im2col"
