"""Convolution by im2col + the tiled GEMM. Mirrors fastnn/backends/numpy/conv.py.

im2col lays every receptive field out as a row, so the convolution becomes
``col @ W.reshape(F, -1).T + b`` (one ``matmul`` with the bias fused in), kept for the
weight gradient ``dy2.T @ col``. The input gradient skips the reference's
``col2im(dy2 @ W.reshape(F, -1))`` detour: ``conv_dx_kernel`` computes it directly, with no
(N*OH*OW, C*KH*KW) buffer. Every kernel here gives one thread one output element and
gathers what it needs, so nothing is written twice and no atomics are used.
"""
from numba import cuda, float32

from .arrays import THREADS, blocks, empty, require_device
from .dense import column_sums, matmul


def output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


@cuda.jit
def im2col_kernel(col, x, kh, kw, stride, pad, oh_size, ow_size):
    # x (N, C, H, W) -> col (N*OH*OW, C*KH*KW), rows ordered (n, oh, ow), columns (c, i, j)
    # NumPy: col[(n, oh, ow), (c, i, j)] = x_padded[n, c, oh*stride + i, ow*stride + j]
    t = cuda.grid(1)
    if t < col.size:
        n_cols = col.shape[1]
        r, k = t // n_cols, t % n_cols
        n, p = r // (oh_size * ow_size), r % (oh_size * ow_size)
        oh, ow = p // ow_size, p % ow_size
        c, tap = k // (kh * kw), k % (kh * kw)
        i, j = tap // kw, tap % kw
        h = oh * stride - pad + i
        w = ow * stride - pad + j
        inside = 0 <= h < x.shape[2] and 0 <= w < x.shape[3]
        col[r, k] = x[n, c, h, w] if inside else float32(0.0)


@cuda.jit
def col2im_kernel(x, col, kh, kw, stride, pad, oh_size, ow_size):
    # col (N*OH*OW, C*KH*KW) -> x (N, C, H, W), overlapping windows summed
    # NumPy: x = sum over taps (i, j) of col's entries whose window covers (h, w) at tap (i, j)
    t = cuda.grid(1)
    if t < x.size:
        C, H, W = x.shape[1], x.shape[2], x.shape[3]
        n, c = t // (C * H * W), (t // (H * W)) % C
        h, w = (t // W) % H, t % W
        acc = float32(0.0)
        for i in range(kh):           # taps in the reference's order: i, then j
            hs = h + pad - i          # = oh * stride for the window that sees (h, w) at tap i
            if hs >= 0 and hs % stride == 0 and hs // stride < oh_size:
                oh = hs // stride
                for j in range(kw):
                    ws = w + pad - j
                    if ws >= 0 and ws % stride == 0 and ws // stride < ow_size:
                        ow = ws // stride
                        acc += col[(n * oh_size + oh) * ow_size + ow, (c * kh + i) * kw + j]
        x[n, c, h, w] = acc


@cuda.jit
def conv_dx_kernel(dx, dy, weights, stride, pad):
    # dy (N, F, OH, OW), weights (F, C, KH, KW) -> dx (N, C, H, W)
    # NumPy: dx = col2im(dy.transpose(0, 2, 3, 1).reshape(-1, F) @ weights.reshape(F, -1)), fused:
    # each input pixel gathers dy * weights over the windows that see it, and the
    # (N*OH*OW, C*KH*KW) gradient of the columns is never stored.
    t = cuda.grid(1)
    if t < dx.size:
        C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
        F, kh, kw = weights.shape[0], weights.shape[2], weights.shape[3]
        oh_size, ow_size = dy.shape[2], dy.shape[3]
        n, c = t // (C * H * W), (t // (H * W)) % C
        h, w = (t // W) % H, t % W
        acc = float32(0.0)
        for i in range(kh):
            hs = h + pad - i
            if hs >= 0 and hs % stride == 0 and hs // stride < oh_size:
                oh = hs // stride
                for j in range(kw):
                    ws = w + pad - j
                    if ws >= 0 and ws % stride == 0 and ws // stride < ow_size:
                        ow = ws // stride
                        for f in range(F):
                            acc += dy[n, f, oh, ow] * weights[f, c, i, j]
        dx[n, c, h, w] = acc


@cuda.jit
def rows_to_nchw_kernel(y, rows):
    # rows (N*OH*OW, F) -> y (N, F, OH, OW)
    # NumPy: y = rows.reshape(N, OH, OW, F).transpose(0, 3, 1, 2)
    t = cuda.grid(1)
    if t < y.size:
        F, P = y.shape[1], y.shape[2]          # y seen as (N, F, OH*OW)
        n, f, p = t // (F * P), (t // P) % F, t % P
        y[n, f, p] = rows[n * P + p, f]


@cuda.jit
def nchw_to_rows_kernel(rows, y):
    # y (N, F, OH, OW) -> rows (N*OH*OW, F)
    # NumPy: rows = y.transpose(0, 2, 3, 1).reshape(-1, F)
    t = cuda.grid(1)
    if t < rows.size:
        F, P = y.shape[1], y.shape[2]          # y seen as (N, F, OH*OW)
        r, f = t // F, t % F
        rows[r, f] = y[r // P, f, r % P]


def im2col(x, kh, kw, stride, pad):
    # x (N, C, H, W) -> col (N*OH*OW, C*KH*KW)
    require_device("im2col", x=x)
    N, C, H, W = x.shape
    OH, OW = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    col = empty((N * OH * OW, C * kh * kw))
    im2col_kernel[blocks(col.size), THREADS](col, x, kh, kw, stride, pad, OH, OW)
    return col


def col2im(col, x_shape, kh, kw, stride, pad):
    # col (N*OH*OW, C*KH*KW) -> x (N, C, H, W)
    require_device("col2im", col=col)
    N, C, H, W = x_shape
    OH, OW = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    x = empty(tuple(x_shape))
    col2im_kernel[blocks(x.size), THREADS](x, col, kh, kw, stride, pad, OH, OW)
    return x


def conv2d_forward(x, W, b, stride, pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)
    require_device("conv2d_forward", x=x, W=W, b=b)
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = output_size(H, KH, stride, pad), output_size(Wd, KW, stride, pad)
    col = im2col(x, KH, KW, stride, pad)
    rows = matmul(col, W.reshape(F, C * KH * KW), trans_b=True, bias=b)   # (N*OH*OW, F)
    y = empty((N, F, OH, OW))
    rows_to_nchw_kernel[blocks(y.size), THREADS](y.reshape(N, F, OH * OW), rows)
    return y, (tuple(x.shape), col, W, stride, pad)


def conv2d_backward(dy, cache, need_dx=True):
    # dy (N, F, OH, OW) -> dx (N, C, H, W) or None, dW (F, C, KH, KW), db (F,)
    require_device("conv2d_backward", dy=dy)
    x_shape, col, W, stride, pad = cache
    N, F, OH, OW = dy.shape
    _, C, KH, KW = W.shape
    dy2 = empty((N * OH * OW, F))
    nchw_to_rows_kernel[blocks(dy2.size), THREADS](dy2, dy.reshape(N, F, OH * OW))
    db = column_sums(dy2)                                        # dy2.sum(axis=0)
    dW = matmul(dy2, col, trans_a=True).reshape(F, C, KH, KW)    # dy2.T @ col
    dx = None
    if need_dx:                                                  # col2im(dy2 @ W.reshape(F, -1)), fused
        dx = empty(x_shape)
        conv_dx_kernel[blocks(dx.size), THREADS](dx, dy, W, stride, pad)
    return dx, dW, db


def conv2d_algorithm(x_shape, w_shape, stride, pad):
    """One algorithm on the GPU so far: whole-batch im2col and the tiled GEMM."""
    return "im2col"
