"""Batch normalisation on the GPU: per feature of (N, D), per channel of (N, C, H, W).

Mirrors fastnn/backends/numpy/norm.py. Both layouts are seen as (N, C, S) (S = 1 for
(N, D)); the training kernels give one block per channel, whose threads share the
channel's N*S values and meet in a shared-memory tree reduction (``block_sum``).
Statistics are two-pass (mean, then the mean of squared deviations), as in the reference.
"""
import math

import numpy as np
from numba import cuda, float32

from .arrays import REDUCE_THREADS, block_sum, empty, flat, launch, require_device


def _as_ncs(x):
    # (N, D) -> (N, D, 1); (N, C, H, W) -> (N, C, H*W): same memory
    if len(x.shape) == 2:
        return x.reshape(x.shape[0], x.shape[1], 1)
    N, C, H, W = x.shape
    return x.reshape(N, C, H * W)


@cuda.jit
def batchnorm_forward_kernel(y, x_hat, mean, var, std, x, gamma, beta, eps):
    # x (N, C, S) -> y, x_hat (N, C, S); mean, var, std (C,); one block per channel c
    # NumPy: mean = x.mean((0, 2)); var = ((x - mean)**2).mean((0, 2)); std = sqrt(var + eps)
    #        x_hat = (x - mean) / std; y = gamma * x_hat + beta
    shared = cuda.shared.array(REDUCE_THREADS, float32)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    S = x.shape[2]
    count = x.shape[0] * S
    acc = float32(0.0)
    for i in range(t, count, cuda.blockDim.x):
        acc += x[i // S, c, i % S]
    m = block_sum(shared, acc) / float32(count)
    acc = float32(0.0)
    for i in range(t, count, cuda.blockDim.x):
        d = x[i // S, c, i % S] - m
        acc += d * d
    v = block_sum(shared, acc) / float32(count)
    s = math.sqrt(v + eps)
    for i in range(t, count, cuda.blockDim.x):
        h = (x[i // S, c, i % S] - m) / s
        x_hat[i // S, c, i % S] = h
        y[i // S, c, i % S] = gamma[c] * h + beta[c]
    if t == 0:
        mean[c] = m
        var[c] = v
        std[c] = s


@cuda.jit
def batchnorm_backward_kernel(dx, dgamma, dbeta, dy, x_hat, std, gamma):
    # dy, x_hat (N, C, S) -> dx (N, C, S), dgamma, dbeta (C,); one block per channel c
    # NumPy: dbeta = dy.sum((0, 2)); dgamma = (dy * x_hat).sum((0, 2))
    #        dx = gamma / std * (dy - dbeta / count - x_hat * dgamma / count)
    shared = cuda.shared.array(REDUCE_THREADS, float32)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    S = dy.shape[2]
    count = dy.shape[0] * S
    acc = float32(0.0)
    for i in range(t, count, cuda.blockDim.x):
        acc += dy[i // S, c, i % S]
    sum_dy = block_sum(shared, acc)
    acc = float32(0.0)
    for i in range(t, count, cuda.blockDim.x):
        acc += dy[i // S, c, i % S] * x_hat[i // S, c, i % S]
    sum_dy_xhat = block_sum(shared, acc)
    mean_dy = sum_dy / float32(count)
    mean_dy_xhat = sum_dy_xhat / float32(count)
    scale = gamma[c] / std[c]
    for i in range(t, count, cuda.blockDim.x):
        n, j = i // S, i % S
        dx[n, c, j] = scale * (dy[n, c, j] - mean_dy - x_hat[n, c, j] * mean_dy_xhat)
    if t == 0:
        dgamma[c] = sum_dy_xhat
        dbeta[c] = sum_dy


@cuda.jit
def batchnorm_inference_kernel(y, x, gamma, beta, mean, var, eps):
    # x (N, C, S) -> y; NumPy: y = gamma / sqrt(var + eps) * (x - mean) + beta, per channel
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        C, S = x.shape[1], x.shape[2]
        n, c, j = i // (C * S), (i // S) % C, i % S
        y[n, c, j] = gamma[c] / math.sqrt(var[c] + eps) * (x[n, c, j] - mean[c]) + beta[c]


@cuda.jit
def running_average_kernel(avg, value, momentum, one_minus_momentum):
    # avg = momentum * avg + (1 - momentum) * value, in place
    for i in range(cuda.grid(1), avg.size, cuda.gridsize(1)):
        avg[i] = momentum * avg[i] + one_minus_momentum * value[i]


def batchnorm_forward(x, gamma, beta, eps):
    # x (N, D) or (N, C, H, W) -> y like x, batch mean (C,), biased batch variance (C,)
    require_device("batchnorm_forward", x=x, gamma=gamma, beta=beta)
    C = x.shape[1]
    y, x_hat = empty(x.shape), empty(x.shape)
    mean, var, std = empty(C), empty(C), empty(C)
    batchnorm_forward_kernel[C, REDUCE_THREADS](_as_ncs(y), _as_ncs(x_hat), mean, var, std,
                                                _as_ncs(x), gamma, beta, np.float32(eps))
    return y, mean, var, (x_hat, std, gamma)


def batchnorm_backward(dy, cache):
    # dy like x -> dx like x, dgamma (C,), dbeta (C,)
    require_device("batchnorm_backward", dy=dy)
    x_hat, std, gamma = cache
    C = dy.shape[1]
    dx, dgamma, dbeta = empty(dy.shape), empty(C), empty(C)
    batchnorm_backward_kernel[C, REDUCE_THREADS](_as_ncs(dx), dgamma, dbeta, _as_ncs(dy), _as_ncs(x_hat),
                                                 std, gamma)
    return dx, dgamma, dbeta


def batchnorm_inference(x, gamma, beta, mean, var, eps):
    require_device("batchnorm_inference", x=x, gamma=gamma, beta=beta, mean=mean, var=var)
    y = empty(x.shape)
    batchnorm_inference_kernel[launch(x.size)](_as_ncs(y), _as_ncs(x), gamma, beta, mean, var,
                                                        np.float32(eps))
    return y


def running_average_update(avg, value, momentum):
    # avg = momentum * avg + (1 - momentum) * value, in place
    require_device("running_average_update", avg=avg, value=value)
    running_average_kernel[launch(avg.size)](flat(avg), flat(value), np.float32(momentum),
                                                      np.float32(1 - momentum))
