"""Batch normalisation: per feature of (N, D), or per channel of (N, C, H, W)."""
import numpy as np


def _layout(x):
    # the axes averaged over, and the shape that broadcasts a (D,) or (C,) vector against x
    return ((0,), (1, -1)) if x.ndim == 2 else ((0, 2, 3), (1, -1, 1, 1))


def batchnorm_forward(x, gamma, beta, eps):
    # x (N, D) or (N, C, H, W) -> y like x, batch mean (D,), biased batch variance (D,)
    axes, col = _layout(x)
    mean = x.mean(axis=axes)
    centred = x - mean.reshape(col)
    var = (centred * centred).mean(axis=axes)
    std = np.sqrt(var + eps).reshape(col)
    x_hat = centred / std
    y = gamma.reshape(col) * x_hat + beta.reshape(col)
    return y, mean, var, (x_hat, std, gamma.reshape(col), axes)


def batchnorm_backward(dy, cache):
    # dy like x -> dx like x, dgamma (D,), dbeta (D,)
    x_hat, std, gamma, axes = cache
    dx_hat = dy * gamma
    dx = (dx_hat - dx_hat.mean(axis=axes, keepdims=True)
          - x_hat * (dx_hat * x_hat).mean(axis=axes, keepdims=True)) / std
    return dx, (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)


def batchnorm_inference(x, gamma, beta, mean, var, eps):
    _, col = _layout(x)
    return (gamma / np.sqrt(var + eps)).reshape(col) * (x - mean.reshape(col)) + beta.reshape(col)


def running_average_update(avg, value, momentum):
    # avg = momentum * avg + (1 - momentum) * value, in place
    avg *= momentum
    avg += (1 - momentum) * value
