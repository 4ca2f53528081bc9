"""Max and average pooling over size x size windows (padding: -inf for max, 0 for avg)."""
import numpy as np

from .conv import add_windows, windows


def maxpool2d_forward(x, size, stride, pad):
    # x (N, C, H, W) -> y (N, C, OH, OW); the cache keeps the argmax of each window
    win = windows(x, size, size, stride, pad, fill=-np.inf)
    N, C, OH, OW = win.shape[:4]
    flat = win.reshape(N, C, OH, OW, size * size)
    arg = flat.argmax(axis=-1)
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return y, (x.shape, arg, size, stride, pad)


def maxpool2d_backward(dy, cache):
    # dy (N, C, OH, OW) -> dx (N, C, H, W): each gradient goes to its window's argmax
    x_shape, arg, size, stride, pad = cache
    dwin = np.zeros(dy.shape + (size * size,), dtype=dy.dtype)
    np.put_along_axis(dwin, arg[..., None], dy[..., None], axis=-1)
    return add_windows(dwin.reshape(dy.shape + (size, size)), x_shape, stride, pad)


def avgpool2d_forward(x, size, stride, pad):
    # x (N, C, H, W) -> y (N, C, OH, OW); zero padding counts towards the mean
    y = windows(x, size, size, stride, pad).mean(axis=(-2, -1), dtype=x.dtype)
    return y, (x.shape, size, stride, pad)


def avgpool2d_backward(dy, cache):
    # dy (N, C, OH, OW) -> dx (N, C, H, W): each window shares its gradient equally
    x_shape, size, stride, pad = cache
    share = dy / dy.dtype.type(size * size)
    dwin = np.broadcast_to(share[..., None, None], dy.shape + (size, size))
    return add_windows(dwin, x_shape, stride, pad)
