"""Optimizer updates, in place on the parameter and its state (PyTorch's formulas).

Weight decay is L2 added to the gradient: g = grad + weight_decay * param.
The gradient itself is never written.
"""
import numpy as np


def _decayed(param, grad, weight_decay):
    return grad + weight_decay * param if weight_decay else grad


def sgd_update(param, grad, lr, weight_decay=0.0):
    # param -= lr * g
    param -= lr * _decayed(param, grad, weight_decay)


def momentum_update(param, grad, velocity, lr, momentum, weight_decay=0.0):
    # v = momentum * v + g; param -= lr * v
    g = _decayed(param, grad, weight_decay)
    velocity *= momentum
    velocity += g
    param -= lr * velocity


def nesterov_update(param, grad, velocity, lr, momentum, weight_decay=0.0):
    # v = momentum * v + g; param -= lr * (g + momentum * v)
    g = _decayed(param, grad, weight_decay)
    velocity *= momentum
    velocity += g
    param -= lr * (g + momentum * velocity)


def adagrad_update(param, grad, sum_sq, lr, eps, weight_decay=0.0):
    # s += g^2; param -= lr * g / (sqrt(s) + eps)
    g = _decayed(param, grad, weight_decay)
    sum_sq += g * g
    param -= lr * g / (np.sqrt(sum_sq) + eps)


def rmsprop_update(param, grad, sq_avg, lr, alpha, eps, weight_decay=0.0):
    # s = alpha * s + (1 - alpha) * g^2; param -= lr * g / (sqrt(s) + eps)
    g = _decayed(param, grad, weight_decay)
    sq_avg *= alpha
    sq_avg += (1 - alpha) * g * g
    param -= lr * g / (np.sqrt(sq_avg) + eps)


def adadelta_update(param, grad, sq_avg, delta_avg, lr, rho, eps, weight_decay=0.0):
    # s = rho*s + (1-rho)*g^2; d = sqrt(u + eps) / sqrt(s + eps) * g;
    # u = rho*u + (1-rho)*d^2; param -= lr * d
    g = _decayed(param, grad, weight_decay)
    sq_avg *= rho
    sq_avg += (1 - rho) * g * g
    delta = np.sqrt(delta_avg + eps) / np.sqrt(sq_avg + eps) * g
    delta_avg *= rho
    delta_avg += (1 - rho) * delta * delta
    param -= lr * delta


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0):
    # m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    # param -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    g = _decayed(param, grad, weight_decay)
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    param -= lr * m_hat / (np.sqrt(v_hat) + eps)
