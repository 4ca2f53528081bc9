"""Optimizer updates on the GPU, in place on the parameter and its state (PyTorch's formulas).

Mirrors fastnn/backends/numpy/optim.py. One thread per element of the flat parameter;
the hyper-parameters are passed as float32 scalars, so the arithmetic is float32 as in the
reference. Weight decay is L2 added to the gradient: g = grad + weight_decay * param.
The gradient itself is never written.
"""
import math

import numpy as np
from numba import cuda

from .arrays import flat, launch, require_device

f32 = np.float32


@cuda.jit
def sgd_kernel(param, grad, lr, wd):
    # param, grad (n,) flat; param in place
    # param -= lr * (grad + wd * param)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + wd * param[i]
        param[i] -= lr * g


@cuda.jit
def momentum_kernel(param, grad, velocity, lr, momentum, wd):
    # every array (n,) flat; param and its state in place
    # v = momentum * v + g; param -= lr * v
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + wd * param[i]
        v = momentum * velocity[i] + g
        velocity[i] = v
        param[i] -= lr * v


@cuda.jit
def nesterov_kernel(param, grad, velocity, lr, momentum, wd):
    # every array (n,) flat; param and its state in place
    # v = momentum * v + g; param -= lr * (g + momentum * v)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + wd * param[i]
        v = momentum * velocity[i] + g
        velocity[i] = v
        param[i] -= lr * (g + momentum * v)


@cuda.jit
def adagrad_kernel(param, grad, sum_sq, lr, eps, wd):
    # every array (n,) flat; param and its state in place
    # s += g^2; param -= lr * g / (sqrt(s) + eps)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + wd * param[i]
        s = sum_sq[i] + g * g
        sum_sq[i] = s
        param[i] -= lr * g / (math.sqrt(s) + eps)


@cuda.jit
def rmsprop_kernel(param, grad, sq_avg, lr, alpha, one_minus_alpha, eps, wd):
    # every array (n,) flat; param and its state in place
    # s = alpha * s + (1 - alpha) * g^2; param -= lr * g / (sqrt(s) + eps)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + wd * param[i]
        s = alpha * sq_avg[i] + one_minus_alpha * g * g
        sq_avg[i] = s
        param[i] -= lr * g / (math.sqrt(s) + eps)


@cuda.jit
def adadelta_kernel(param, grad, sq_avg, delta_avg, lr, rho, one_minus_rho, eps, wd):
    # every array (n,) flat; param and its state in place
    # s = rho*s + (1-rho)*g^2; d = sqrt(u + eps) / sqrt(s + eps) * g; u = rho*u + (1-rho)*d^2;
    # param -= lr * d
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + wd * param[i]
        s = rho * sq_avg[i] + one_minus_rho * g * g
        sq_avg[i] = s
        d = math.sqrt(delta_avg[i] + eps) / math.sqrt(s + eps) * g
        delta_avg[i] = rho * delta_avg[i] + one_minus_rho * d * d
        param[i] -= lr * d


@cuda.jit
def adam_kernel(param, grad, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2,
                correction1, correction2, eps, wd):
    # every array (n,) flat; param and its state in place
    # m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    # param -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)   (correction_k = 1 - b_k^t)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + wd * param[i]
        m_i = beta1 * m[i] + one_minus_beta1 * g
        v_i = beta2 * v[i] + one_minus_beta2 * g * g
        m[i] = m_i
        v[i] = v_i
        param[i] -= lr * (m_i / correction1) / (math.sqrt(v_i / correction2) + eps)


def _launch(kernel, name, param, grad, state, *scalars):
    require_device(name, param=param, grad=grad, **{f"state{i}": s for i, s in enumerate(state)})
    arrays = [flat(param), flat(grad)] + [flat(s) for s in state]
    kernel[launch(param.size)](*arrays, *(f32(s) for s in scalars))


def sgd_update(param, grad, lr, weight_decay=0.0):
    _launch(sgd_kernel, "sgd_update", param, grad, (), lr, weight_decay)


def momentum_update(param, grad, velocity, lr, momentum, weight_decay=0.0):
    _launch(momentum_kernel, "momentum_update", param, grad, (velocity,), lr, momentum, weight_decay)


def nesterov_update(param, grad, velocity, lr, momentum, weight_decay=0.0):
    _launch(nesterov_kernel, "nesterov_update", param, grad, (velocity,), lr, momentum, weight_decay)


def adagrad_update(param, grad, sum_sq, lr, eps, weight_decay=0.0):
    _launch(adagrad_kernel, "adagrad_update", param, grad, (sum_sq,), lr, eps, weight_decay)


def rmsprop_update(param, grad, sq_avg, lr, alpha, eps, weight_decay=0.0):
    _launch(rmsprop_kernel, "rmsprop_update", param, grad, (sq_avg,), lr, alpha, 1 - alpha, eps, weight_decay)


def adadelta_update(param, grad, sq_avg, delta_avg, lr, rho, eps, weight_decay=0.0):
    _launch(adadelta_kernel, "adadelta_update", param, grad, (sq_avg, delta_avg), lr, rho, 1 - rho, eps,
            weight_decay)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0):
    _launch(adam_kernel, "adam_update", param, grad, (m, v), lr, beta1, 1 - beta1, beta2, 1 - beta2,
            1 - beta1 ** step, 1 - beta2 ** step, eps, weight_decay)
