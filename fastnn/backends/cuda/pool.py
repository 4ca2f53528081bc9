"""Max and average pooling over size x size windows. Mirrors fastnn/backends/numpy/pool.py.

Padding counts as -inf for max and as 0 for average (zero padding counted in the mean).
Forward: one thread per output. Backward: one thread per input element, gathering the
gradient of every window that covers it (no atomics, the same order as the reference).
The max-pool cache keeps the argmax of each window as an index 0..size*size-1, like the
reference's.
"""
import numpy as np
from numba import cuda, float32

from .arrays import empty, launch, require_device
from .conv import output_size

NEG_INF = np.float32(-np.inf)


@cuda.jit
def maxpool_forward_kernel(y, arg, x, size, stride, pad):
    # x (N, C, H, W) -> y (N, C, OH, OW), arg (N, C, OH, OW) int32
    # NumPy: arg = windows(x).reshape(..., size*size).argmax(-1) (first maximum); y = max
    for t in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        C, OH, OW = y.shape[1], y.shape[2], y.shape[3]
        n, c = t // (C * OH * OW), (t // (OH * OW)) % C
        oh, ow = (t // OW) % OH, t % OW
        best = NEG_INF
        best_k = 0
        for i in range(size):
            h = oh * stride - pad + i
            for j in range(size):
                w = ow * stride - pad + j
                v = x[n, c, h, w] if 0 <= h < x.shape[2] and 0 <= w < x.shape[3] else NEG_INF
                # the first maximum wins, as in np.argmax, and the first NaN beats any number
                if v > best or (v != v and best == best):
                    best = v
                    best_k = i * size + j
        y[n, c, oh, ow] = best
        arg[n, c, oh, ow] = best_k


@cuda.jit
def maxpool_backward_kernel(dx, dy, arg, size, stride, pad):
    # dy (N, C, OH, OW), arg -> dx (N, C, H, W): each gradient goes to its window's argmax
    # NumPy: dwin[..., arg] = dy (zeros elsewhere); dx = add_windows(dwin) (overlaps summed)
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
        OH, OW = dy.shape[2], dy.shape[3]
        n, c = t // (C * H * W), (t // (H * W)) % C
        h, w = (t // W) % H, t % W
        acc = float32(0.0)
        for i in range(size):
            hs = h + pad - i
            if hs >= 0 and hs % stride == 0 and hs // stride < OH:
                for j in range(size):
                    ws = w + pad - j
                    if ws >= 0 and ws % stride == 0 and ws // stride < OW:
                        if arg[n, c, hs // stride, ws // stride] == i * size + j:
                            acc += dy[n, c, hs // stride, ws // stride]
        dx[n, c, h, w] = acc


@cuda.jit
def avgpool_forward_kernel(y, x, size, stride, pad):
    # x (N, C, H, W) -> y (N, C, OH, OW); NumPy: y = windows(x).mean(axis=(-2, -1)), zeros padded
    for t in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        C, OH, OW = y.shape[1], y.shape[2], y.shape[3]
        n, c = t // (C * OH * OW), (t // (OH * OW)) % C
        oh, ow = (t // OW) % OH, t % OW
        acc = float32(0.0)
        for i in range(size):
            h = oh * stride - pad + i
            for j in range(size):
                w = ow * stride - pad + j
                if 0 <= h < x.shape[2] and 0 <= w < x.shape[3]:
                    acc += x[n, c, h, w]
        y[n, c, oh, ow] = acc / float32(size * size)


@cuda.jit
def avgpool_backward_kernel(dx, dy, size, stride, pad):
    # dy (N, C, OH, OW) -> dx (N, C, H, W): each window shares its gradient equally
    # NumPy: dx = add_windows(broadcast(dy / size**2 over each window)) (overlaps summed)
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
        OH, OW = dy.shape[2], dy.shape[3]
        n, c = t // (C * H * W), (t // (H * W)) % C
        h, w = (t // W) % H, t % W
        area = float32(size * size)
        acc = float32(0.0)
        for i in range(size):
            hs = h + pad - i
            if hs >= 0 and hs % stride == 0 and hs // stride < OH:
                for j in range(size):
                    ws = w + pad - j
                    if ws >= 0 and ws % stride == 0 and ws // stride < OW:
                        acc += dy[n, c, hs // stride, ws // stride] / area
        dx[n, c, h, w] = acc


def _out_shape(x_shape, size, stride, pad):
    N, C, H, W = x_shape
    return (N, C, output_size(H, size, stride, pad), output_size(W, size, stride, pad))


def maxpool2d_forward(x, size, stride, pad):
    # x (N, C, H, W) -> y (N, C, OH, OW); the cache keeps the argmax of each window
    require_device("maxpool2d_forward", x=x)
    shape = _out_shape(x.shape, size, stride, pad)
    y, arg = empty(shape), empty(shape, np.int32)
    maxpool_forward_kernel[launch(y.size)](y, arg, x, size, stride, pad)
    return y, (tuple(x.shape), arg, size, stride, pad)


def maxpool2d_backward(dy, cache):
    # dy (N, C, OH, OW) -> dx (N, C, H, W)
    require_device("maxpool2d_backward", dy=dy)
    x_shape, arg, size, stride, pad = cache
    dx = empty(x_shape)
    maxpool_backward_kernel[launch(dx.size)](dx, dy, arg, size, stride, pad)
    return dx


def avgpool2d_forward(x, size, stride, pad):
    # x (N, C, H, W) -> y (N, C, OH, OW); zero padding counts towards the mean
    require_device("avgpool2d_forward", x=x)
    y = empty(_out_shape(x.shape, size, stride, pad))
    avgpool_forward_kernel[launch(y.size)](y, x, size, stride, pad)
    return y, (tuple(x.shape), size, stride, pad)


def avgpool2d_backward(dy, cache):
    # dy (N, C, OH, OW) -> dx (N, C, H, W)
    require_device("avgpool2d_backward", dy=dy)
    x_shape, size, stride, pad = cache
    dx = empty(x_shape)
    avgpool_backward_kernel[launch(dx.size)](dx, dy, size, stride, pad)
    return dx
