"""Max and average pooling with Numba. Mirrors fastnn/backends/numpy/pool.py.

One (image, channel) plane per parallel iteration, so no two threads write the same pixel.
Max pooling keeps the argmax of each window as a flat index into the input plane (a window
always overlaps the input because pad <= size // 2), or -1 where the -inf padding wins: a
padded window whose pixels are all -inf, as in the reference, whose argmax is then the first
padding cell; backward zeroes the plane and routes each gradient to its window's maximum in
the same pass, and drops the ones that went to the padding. Padding is -inf for
max (windows are clipped to the input, which is the same thing) and zeros for average (the
divisor stays size * size).
"""
import numpy as np
from numba import njit, prange

from ._common import PRANGE, beats, f32, has_nan


def _out(size_in, size, stride, pad):
    return (size_in + 2 * pad - size) // stride + 1


@njit(cache=True)
def _max_plane(y, arg, plane, H, W, size, stride, pad):
    # plane (H * W,) flat -> y, arg (OH, OW): arg the flat index h*W + w of the max, -1 the padding
    # y[oh, ow] = plane_padded[oh*s : oh*s + size, ow*s : ow*s + size].max(), first max (or NaN) wins
    OH, OW = y.shape
    for oh in range(OH):
        h0, h1 = max(oh * stride - pad, 0), min(oh * stride - pad + size, H)
        for ow in range(OW):
            w0, w1 = max(ow * stride - pad, 0), min(ow * stride - pad + size, W)
            # window rows h0..h1, columns w0..w1 (clipped: -inf padding never wins)
            where = h0 * W + w0
            best = plane[where]
            for h in range(h0, h1):
                for w in range(w0, w1):
                    k = h * W + w
                    v = plane[k]
                    if beats(v, best):  # the first maximum (or NaN) in row-major order, as argmax
                        best, where = v, k
            if best == -np.inf and (h0 > oh * stride - pad or w0 > ow * stride - pad):
                where = -1  # the padding, which comes first in the window, is the argmax
            y[oh, ow] = best
            arg[oh, ow] = where


@njit(cache=True, parallel=PRANGE)
def _max_forward(y, arg, x, size, stride, pad):
    # x (N, C, H, W) -> y (N, C, OH, OW), arg (N, C, OH, OW) int32, one plane at a time (_max_plane)
    N, C, H, W = x.shape
    for t in prange(N * C):
        n, c = t // C, t % C
        _max_plane(y[n, c], arg[n, c], x[n, c].reshape(H * W), H, W, size, stride, pad)


@njit(cache=True, parallel=PRANGE)
def _max_forward_2x2(y, arg, x):
    # the same for size 2, stride 2, pad 0 (every model here): four explicit taps per window
    # compile to straight-line selects, ten times faster than the general window loop. The
    # comparisons ignore NaN (knowing it would double the time); a plane with a NaN in it, which
    # a sum of the plane finds, is done again by the general loop, which knows it.
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for t in prange(N * C):
        n, c = t // C, t % C
        for oh in range(OH):
            top, bottom = x[n, c, 2 * oh], x[n, c, 2 * oh + 1]
            y_row, arg_row = y[n, c, oh], arg[n, c, oh]
            for ow in range(OW):
                k = 2 * oh * W + 2 * ow  # flat index of the window's top-left pixel
                best, where = top[2 * ow], k
                if top[2 * ow + 1] > best:
                    best, where = top[2 * ow + 1], k + 1
                if bottom[2 * ow] > best:
                    best, where = bottom[2 * ow], k + W
                if bottom[2 * ow + 1] > best:
                    best, where = bottom[2 * ow + 1], k + W + 1
                y_row[ow], arg_row[ow] = best, where
        if has_nan(x[n, c].reshape(H * W), 0, H * W):
            _max_plane(y[n, c], arg[n, c], x[n, c].reshape(H * W), H, W, 2, 2, 0)


@njit(cache=True, parallel=PRANGE)
def _max_backward(dx, dy, arg):
    # dy (N, C, OH, OW), arg (N, C, OH, OW) -> dx (N, C, H, W)
    # dx = 0; dx.flat[arg] += dy  (per plane; += because overlapping windows can share a max;
    # arg -1, the padding, takes nothing)
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    for t in prange(N * C):
        n, c = t // C, t % C
        plane = dx[n, c].reshape(H * W)  # a view: writes land in dx
        plane[:] = 0.0
        for oh in range(OH):
            for ow in range(OW):
                k = arg[n, c, oh, ow]
                if k >= 0:
                    plane[k] += dy[n, c, oh, ow]


@njit(cache=True, parallel=PRANGE, fastmath={"nsz", "contract", "reassoc"})
def _avg_forward(y, x, size, stride, pad):
    # y[n, c, oh, ow] = x_zero_padded[n, c, oh*s : oh*s + size, ow*s : ow*s + size].mean()
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    scale = np.float32(1.0 / (size * size))
    for t in prange(N * C):
        n, c = t // C, t % C
        plane = x[n, c]
        for oh in range(OH):
            h0, h1 = max(oh * stride - pad, 0), min(oh * stride - pad + size, H)
            for ow in range(OW):
                w0, w1 = max(ow * stride - pad, 0), min(ow * stride - pad + size, W)
                total = np.float32(0.0)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        total += plane[h, w]
                y[n, c, oh, ow] = total * scale


@njit(cache=True, parallel=PRANGE)
def _avg_backward(dx, dy, size, stride, pad):
    # dx[n, c, window] += dy[n, c, oh, ow] / size**2 for every window, zero padding dropped
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    scale = np.float32(1.0 / (size * size))
    for t in prange(N * C):
        n, c = t // C, t % C
        plane = dx[n, c]
        plane[:, :] = 0.0
        for oh in range(OH):
            h0, h1 = max(oh * stride - pad, 0), min(oh * stride - pad + size, H)
            for ow in range(OW):
                w0, w1 = max(ow * stride - pad, 0), min(ow * stride - pad + size, W)
                share = dy[n, c, oh, ow] * scale
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        plane[h, w] += share


def maxpool2d_forward(x, size, stride, pad):
    # x (N, C, H, W) -> y (N, C, OH, OW); the cache keeps the argmax of each window
    x = f32(x)
    N, C, H, W = x.shape
    OH, OW = _out(H, size, stride, pad), _out(W, size, stride, pad)
    y = np.empty((N, C, OH, OW), np.float32)
    arg = np.empty((N, C, OH, OW), np.int32)
    if size == 2 and stride == 2 and pad == 0:
        _max_forward_2x2(y, arg, x)
    else:
        _max_forward(y, arg, x, size, stride, pad)
    return y, (x.shape, arg)


def maxpool2d_backward(dy, cache):
    # dy (N, C, OH, OW) -> dx (N, C, H, W): each gradient goes to its window's argmax
    x_shape, arg = cache
    dx = np.empty(x_shape, np.float32)
    _max_backward(dx, f32(dy), arg)
    return dx


def avgpool2d_forward(x, size, stride, pad):
    # x (N, C, H, W) -> y (N, C, OH, OW); zero padding counts towards the mean
    x = f32(x)
    N, C, H, W = x.shape
    y = np.empty((N, C, _out(H, size, stride, pad), _out(W, size, stride, pad)), np.float32)
    _avg_forward(y, x, size, stride, pad)
    return y, (x.shape, size, stride, pad)


def avgpool2d_backward(dy, cache):
    # dy (N, C, OH, OW) -> dx (N, C, H, W): each window shares its gradient equally
    x_shape, size, stride, pad = cache
    dx = np.empty(x_shape, np.float32)
    _avg_backward(dx, f32(dy), size, stride, pad)
    return dx
