"""Max and average pooling. Mirrors ../numpy/pool.py via fastnn_ext/_pool.pyx."""
import numpy as np

from fastnn_ext import _pool

from ..numpy.conv import output_size
from ._prep import floats


def _planes(x, size, stride, pad):
    (x,) = floats(x)
    N, C, H, W = x.shape
    return x.reshape(N * C, H, W), output_size(H, size, stride, pad), output_size(W, size, stride, pad)


def maxpool2d_forward(x, size, stride, pad):
    # x (N, C, H, W) -> y (N, C, OH, OW); the cache keeps the flat argmax of each window
    planes, OH, OW = _planes(x, size, stride, pad)
    y = np.empty((len(planes), OH, OW), dtype=planes.dtype)
    arg = np.empty((len(planes), OH, OW), dtype=np.int32)
    _pool.maxpool2d_forward(y, arg, planes, size, stride, pad)
    N, C = x.shape[:2]
    return y.reshape(N, C, OH, OW), (x.shape, arg)


def maxpool2d_backward(dy, cache):
    # dy (N, C, OH, OW) -> dx (N, C, H, W): each gradient goes to its window's argmax
    x_shape, arg = cache
    (dy,) = floats(dy)
    N, C, H, W = x_shape
    dx = np.empty((N * C, H * W), dtype=dy.dtype)
    _pool.maxpool2d_backward(dx, arg.reshape(N * C, -1), dy.reshape(N * C, -1))
    return dx.reshape(x_shape)


def avgpool2d_forward(x, size, stride, pad):
    # x (N, C, H, W) -> y (N, C, OH, OW); zero padding counts towards the mean
    planes, OH, OW = _planes(x, size, stride, pad)
    y = np.empty((len(planes), OH, OW), dtype=planes.dtype)
    _pool.avgpool2d_forward(y, planes, size, stride, pad)
    N, C = x.shape[:2]
    return y.reshape(N, C, OH, OW), (x.shape, size, stride, pad)


def avgpool2d_backward(dy, cache):
    # dy (N, C, OH, OW) -> dx (N, C, H, W): each window shares its gradient equally
    x_shape, size, stride, pad = cache
    (dy,) = floats(dy)
    N, C, H, W = x_shape
    dx = np.empty((N * C, H, W), dtype=dy.dtype)
    _pool.avgpool2d_backward(dx, dy.reshape(N * C, *dy.shape[2:]), size, stride, pad)
    return dx.reshape(x_shape)
