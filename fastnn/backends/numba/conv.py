"""Convolution with Numba: a direct kernel for one input channel, im2col + BLAS GEMM otherwise.
Mirrors fastnn/backends/numpy/conv.py.

Two ways behind the one opaque cache:

* ``C == 1, stride 1`` (a network's first layer): a direct convolution. im2col would copy
  every pixel KH*KW times to feed a GEMM whose inner dimension is only KH*KW. Instead each
  image row is treated as "wide": an output pixel q = oh*Wp + ow of the padded width Wp
  reads x_flat[q + i*Wp + j] for tap (i, j), so every tap is one long contiguous,
  vectorised multiply-add over the whole image (the Wp - OW columns past the right edge are
  computed and thrown away).
* otherwise: im2col + three big GEMMs for the whole batch. ``colT`` (C*KH*KW + 1, N*OH*OW)
  holds every receptive field as a column, with a last row of ones, and ``W_ext = [W | b]``,
  so ``y_T = W_ext @ colT`` adds the bias inside the GEMM and ``dW_ext = dy_T @ colT.T``
  yields dW and db together; ``dcolT = W.T @ dy_T`` is what col2im adds back. y_T and dy_T
  are (F, N, OH*OW): one parallel copy of whole rows turns them into NCHW and back.
  One big BLAS call per product, not one per image: on a busy machine every hand-over
  between Numba's threads and BLAS's threads, and every fork/join inside BLAS, can cost a
  scheduler time slice. The columns live in scratch buffers reused from call to call (no
  fresh pages each step); the cache keeps the padded input, not the columns (C*KH*KW copies
  of it), and backward rebuilds them.

BLAS (np.dot) is only ever called outside prange loops: it has its own threads.
"""
import numpy as np
from numba import njit, prange

from ._common import FAST, f32, scratch

N_CHUNKS = 16  # partial weight-gradient sums of the direct kernel (fixed: results do not depend on threads)


def output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _padded(x, pad):
    # x (N, C, H, W) -> (N, C, H + 2 pad, W + 2 pad) float32 contiguous, zeros around
    if pad == 0:
        return f32(x)
    return np.pad(f32(x), ((0, 0), (0, 0), (pad, pad), (pad, pad)))


# ------------------------------------------------------------------- the contract's im2col

@njit(cache=True, parallel=True)
def _im2col(col, xp, kh, kw, stride, oh_size, ow_size):
    # xp (N, C, Hp, Wp) padded -> col (N*OH*OW, C*KH*KW), rows (n, oh, ow), columns (c, i, j)
    # col[(n, oh, ow), (c, i, j)] = xp[n, c, oh*stride + i, ow*stride + j]
    N, C = xp.shape[0], xp.shape[1]
    for n in prange(N):
        for oh in range(oh_size):
            for ow in range(ow_size):
                r = (n * oh_size + oh) * ow_size + ow
                k = 0
                for c in range(C):
                    for i in range(kh):
                        for j in range(kw):
                            col[r, k] = xp[n, c, oh * stride + i, ow * stride + j]
                            k += 1


@njit(cache=True, parallel=True)
def _col2im(dxp, col, kh, kw, stride, oh_size, ow_size):
    # col (N*OH*OW, C*KH*KW) -> dxp (N, C, Hp, Wp) zeroed, overlapping windows summed
    # dxp[n, c, oh*stride + i, ow*stride + j] += col[(n, oh, ow), (c, i, j)]
    N, C = dxp.shape[0], dxp.shape[1]
    for n in prange(N):  # one image per iteration: no two threads write the same pixel
        for oh in range(oh_size):
            for ow in range(ow_size):
                r = (n * oh_size + oh) * ow_size + ow
                k = 0
                for c in range(C):
                    for i in range(kh):
                        for j in range(kw):
                            dxp[n, c, oh * stride + i, ow * stride + j] += col[r, k]
                            k += 1


def im2col(x, kh, kw, stride, pad):
    # x (N, C, H, W) -> col (N*OH*OW, C*KH*KW), rows ordered (n, oh, ow), columns (c, i, j)
    xp = _padded(x, pad)
    N, C, Hp, Wp = xp.shape
    oh, ow = output_size(Hp, kh, stride, 0), output_size(Wp, kw, stride, 0)
    col = np.empty((N * oh * ow, C * kh * kw), np.float32)
    _im2col(col, xp, kh, kw, stride, oh, ow)
    return col


def _crop(xp, x_shape, pad):
    H, W = x_shape[2], x_shape[3]
    return xp if pad == 0 else np.ascontiguousarray(xp[:, :, pad:pad + H, pad:pad + W])


def col2im(col, x_shape, kh, kw, stride, pad):
    # col (N*OH*OW, C*KH*KW) -> x (N, C, H, W), overlapping windows summed
    N, C, H, W = x_shape
    oh, ow = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), np.float32)
    _col2im(dxp, f32(col), kh, kw, stride, oh, ow)
    return _crop(dxp, x_shape, pad)


# ------------------------------------------------- direct convolution, one input channel

@njit(cache=True, parallel=True, fastmath=FAST)
def _direct_forward(y, xp, W, b):
    # xp (N, 1, Hp, Wp), W (F, 1, KH, KW), b (F,) -> y (N, F, OH, OW), stride 1
    N, Hp, Wp = xp.shape[0], xp.shape[2], xp.shape[3]
    F, KH, KW = W.shape[0], W.shape[2], W.shape[3]
    OH, OW = y.shape[2], y.shape[3]
    L = (OH - 1) * Wp + OW  # wide output pixels q = oh*Wp + ow that stay inside the image
    for n in prange(N):
        x_flat = xp[n, 0].reshape(Hp * Wp)
        acc = np.empty(L, np.float32)
        for f in range(F):
            # acc = b[f] + sum_{i,j} W[f, 0, i, j] * x_flat[i*Wp + j : i*Wp + j + L]
            acc[:] = b[f]
            for i in range(KH):
                # the taps of kernel row i, up to three per pass over acc (fewer loads and stores
                # of acc per multiply-add); slices, so every loop indexes from 0 and vectorises
                j = 0
                while j < KW:
                    x0 = x_flat[i * Wp + j:i * Wp + j + L]
                    w0 = W[f, 0, i, j]
                    if j + 2 < KW:
                        x1, x2 = x_flat[i * Wp + j + 1:i * Wp + j + 1 + L], x_flat[i * Wp + j + 2:i * Wp + j + 2 + L]
                        w1, w2 = W[f, 0, i, j + 1], W[f, 0, i, j + 2]
                        for q in range(L):
                            acc[q] += w0 * x0[q] + w1 * x1[q] + w2 * x2[q]
                        j += 3
                    elif j + 1 < KW:
                        x1, w1 = x_flat[i * Wp + j + 1:i * Wp + j + 1 + L], W[f, 0, i, j + 1]
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
def _direct_backward_weights(dW, db, dy, xp, n_chunks):
    # dy (N, F, OH, OW), xp (N, 1, Hp, Wp) -> dW (F, 1, KH, KW), db (F,), stride 1
    # dW[f, 0, i, j] = sum_{n, oh, ow} dy[n, f, oh, ow] * xp[n, 0, oh + i, ow + j]; db = dy.sum((0, 2, 3))
    N, F, OH, OW = dy.shape
    Hp, Wp = xp.shape[2], xp.shape[3]
    KH, KW = dW.shape[2], dW.shape[3]
    L = (OH - 1) * Wp + OW
    part_W = np.zeros((n_chunks, F, KH, KW), np.float32)  # one partial sum per chunk of images
    part_b = np.zeros((n_chunks, F), np.float32)
    for c in prange(n_chunks):
        dy_wide = np.zeros(L, np.float32)  # dy[n, f] laid out at q = oh*Wp + ow, zeros between rows
        for n in range(c * N // n_chunks, (c + 1) * N // n_chunks):
            x_flat = xp[n, 0].reshape(Hp * Wp)
            for f in range(F):
                s = np.float32(0.0)
                for oh in range(OH):
                    src, dst = dy[n, f, oh], dy_wide[oh * Wp:oh * Wp + OW]
                    for ow in range(OW):
                        dst[ow] = src[ow]
                        s += src[ow]
                part_b[c, f] += s
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
                            part_W[c, f, i, j + 1] += t1
                            part_W[c, f, i, j + 2] += t2
                            step = 3
                        elif j + 1 < KW:
                            x1 = x_flat[i * Wp + j + 1:i * Wp + j + 1 + L]
                            for q in range(L):
                                t0 += dy_wide[q] * x0[q]
                                t1 += dy_wide[q] * x1[q]
                            part_W[c, f, i, j + 1] += t1
                            step = 2
                        else:
                            for q in range(L):
                                t0 += dy_wide[q] * x0[q]
                            step = 1
                        part_W[c, f, i, j] += t0
                        j += step
    # dW = part_W.sum(axis=0), db = part_b.sum(axis=0)
    for f in range(F):
        db[f] = part_b[:, f].sum()
        for i in range(KH):
            for j in range(KW):
                dW[f, 0, i, j] = part_W[:, f, i, j].sum()


@njit(cache=True, parallel=True, fastmath=FAST)
def _direct_backward_input(dxp, dy, W):
    # dy (N, F, OH, OW), W (F, 1, KH, KW) -> dxp (N, 1, Hp, Wp), stride 1
    # dxp[n, 0, oh + i, ow + j] += W[f, 0, i, j] * dy[n, f, oh, ow]   (over f, i, j)
    N, F, OH, OW = dy.shape
    Hp, Wp = dxp.shape[2], dxp.shape[3]
    KH, KW = W.shape[2], W.shape[3]
    L = (OH - 1) * Wp + OW
    for n in prange(N):
        dx_flat = dxp[n, 0].reshape(Hp * Wp)  # a view: writes land in dxp
        dx_flat[:] = 0.0
        dy_wide = np.zeros(L, np.float32)
        for f in range(F):
            for oh in range(OH):
                src, dst = dy[n, f, oh], dy_wide[oh * Wp:oh * Wp + OW]
                for ow in range(OW):
                    dst[ow] = src[ow]
            for i in range(KH):
                for j in range(KW):
                    w = W[f, 0, i, j]
                    dx_tap = dx_flat[i * Wp + j:i * Wp + j + L]
                    for q in range(L):
                        dx_tap[q] += w * dy_wide[q]


# ------------------------------------------------------- im2col + GEMM, any channel count

@njit(cache=True, parallel=True)
def _columns(colT, xp, kh, kw, stride, oh_size, ow_size):
    # xp (N, C, Hp, Wp) -> colT (C*KH*KW + 1, N, OH*OW): transposed im2col of the batch, last row ones
    # colT[(c, i, j), n, oh*OW + ow] = xp[n, c, oh*stride + i, ow*stride + j]
    N, C = xp.shape[0], xp.shape[1]
    K = C * kh * kw
    for t in prange(N * C):  # one (image, channel) per iteration
        n, c = t // C, t % C
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                for oh in range(oh_size):
                    dst = colT[row, n, oh * ow_size:(oh + 1) * ow_size]
                    src = xp[n, c, oh * stride + i, j:j + stride * ow_size:stride]
                    for ow in range(ow_size):
                        dst[ow] = src[ow]
        if c == 0:
            colT[K, n, :] = 1.0


@njit(cache=True, parallel=True)
def _add_columns(dxp, dcolT, kh, kw, stride, oh_size, ow_size):
    # dcolT (C*KH*KW, N, OH*OW) -> dxp (N, C, Hp, Wp) zeroed first, windows summed
    # dxp[n, c, oh*stride + i, ow*stride + j] += dcolT[(c, i, j), n, oh*OW + ow]
    N, C = dxp.shape[0], dxp.shape[1]
    for t in prange(N * C):  # one (image, channel) plane per iteration: no write races
        n, c = t // C, t % C
        dxp[n, c] = 0.0
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                for oh in range(oh_size):
                    src = dcolT[row, n, oh * ow_size:(oh + 1) * ow_size]
                    dst = dxp[n, c, oh * stride + i, j:j + stride * ow_size:stride]
                    for ow in range(ow_size):
                        dst[ow] += src[ow]


@njit(cache=True, parallel=True)
def _swap_leading(out, a):
    # a (A, B, P) -> out (B, A, P): out = a.transpose(1, 0, 2), rows of P copied whole
    A, B = a.shape[0], a.shape[1]
    for t in prange(A * B):
        i, j = t // B, t % B
        out[j, i, :] = a[i, j, :]


@njit(cache=True)
def _gemm_forward(y, xp, W_ext, colT, y_T, kh, kw, stride):
    # xp (N, C, Hp, Wp), W_ext (F, C*KH*KW + 1) -> y (N, F, OH*OW)
    F, K1 = W_ext.shape
    N, P = y.shape[0], y.shape[2]
    _columns(colT, xp, kh, kw, stride, (xp.shape[2] - kh) // stride + 1, (xp.shape[3] - kw) // stride + 1)
    # y_T (F, N*P) = W_ext @ colT        (one BLAS call, outside any prange)
    np.dot(W_ext, colT.reshape(K1, N * P), y_T.reshape(F, N * P))
    # y = y_T.transpose(1, 0, 2)
    _swap_leading(y, y_T)


@njit(cache=True)
def _gemm_backward(dW_ext, dxp, dy, xp, W_T, colT, dy_T, dcolT, kh, kw, stride, need_dx):
    # dy (N, F, OH*OW), xp (N, C, Hp, Wp), W_T (C*KH*KW, F) -> dW_ext (F, C*KH*KW + 1), dxp (N, C, Hp, Wp)
    N, F, P = dy.shape
    K1 = dW_ext.shape[1]
    oh_size = (xp.shape[2] - kh) // stride + 1
    ow_size = (xp.shape[3] - kw) // stride + 1
    _swap_leading(dy_T, dy)  # dy_T (F, N, P) = dy.transpose(1, 0, 2)
    _columns(colT, xp, kh, kw, stride, oh_size, ow_size)
    # dW_ext = dy_T @ colT.T            (dW and db: the last column meets the row of ones)
    np.dot(dy_T.reshape(F, N * P), colT.reshape(K1, N * P).T, dW_ext)
    if need_dx:
        # dcolT (K, N*P) = W.T @ dy_T
        np.dot(W_T, dy_T.reshape(F, N * P), dcolT.reshape(K1 - 1, N * P))
        _add_columns(dxp, dcolT, kh, kw, stride, oh_size, ow_size)


# ------------------------------------------------------------------------ the contract

def _direct(C, stride):
    return C == 1 and stride == 1


def conv2d_forward(x, W, b, stride, pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)
    xp = _padded(x, pad)
    N, C, Hp, Wp = xp.shape
    F, _, KH, KW = W.shape
    OH, OW = output_size(Hp, KH, stride, 0), output_size(Wp, KW, stride, 0)
    W, b = f32(W), f32(b)
    y = np.empty((N, F, OH, OW), np.float32)
    if _direct(C, stride):
        _direct_forward(y, xp, W, b)
    else:
        W_ext = np.concatenate([W.reshape(F, -1), b[:, None]], axis=1)  # [W | b]
        colT = scratch("colT", (C * KH * KW + 1, N, OH * OW))
        y_T = scratch("y_T", (F, N, OH * OW))
        _gemm_forward(y.reshape(N, F, OH * OW), xp, W_ext, colT, y_T, KH, KW, stride)
    return y, (x.shape, xp, W, stride, pad)


def conv2d_backward(dy, cache, need_dx=True):
    # dy (N, F, OH, OW) -> dx (N, C, H, W) or None, dW (F, C, KH, KW), db (F,)
    x_shape, xp, W, stride, pad = cache
    dy = f32(dy)
    N, F, OH, OW = dy.shape
    _, C, KH, KW = W.shape
    dxp = np.empty(xp.shape, np.float32) if need_dx else None
    if _direct(C, stride):
        dW, db = np.empty_like(W), np.empty(F, np.float32)
        _direct_backward_weights(dW, db, dy, xp, min(N, N_CHUNKS))
        if need_dx:
            _direct_backward_input(dxp, dy, W)
    else:
        K = C * KH * KW
        colT = scratch("colT", (K + 1, N, OH * OW))
        dy_T = scratch("y_T", (F, N, OH * OW))
        dcolT = scratch("dcolT", (K, N, OH * OW)) if need_dx else colT  # colT: an untouched stand-in
        dW_ext = np.empty((F, K + 1), np.float32)
        _gemm_backward(dW_ext, dxp if need_dx else xp, dy.reshape(N, F, OH * OW), xp,
                       np.ascontiguousarray(W.reshape(F, K).T), colT, dy_T, dcolT, KH, KW, stride, need_dx)
        dW, db = np.ascontiguousarray(dW_ext[:, :K]).reshape(W.shape), np.ascontiguousarray(dW_ext[:, K])
    dx = _crop(dxp, x_shape, pad) if need_dx else None
    return dx, dW, db
