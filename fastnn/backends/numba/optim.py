"""Optimizer updates with Numba, in place on the parameter and its state. Mirrors fastnn/backends/numpy/optim.py.

Each update is one parallel pass over the flattened arrays (the reference makes several
full-size temporaries per step). Weight decay is L2 added to the gradient:
g = grad + weight_decay * param; the gradient itself is never written. Scalars are cast to
float32 once so the arithmetic stays float32, as in the reference.

The wrappers flatten with ``reshape(-1)``, which is a view for the contiguous arrays the
layers and trainer hold; a non-contiguous parameter or state (never made by fastnn) goes
to the reference so the in-place update still lands.
"""
import numpy as np
from numba import njit, prange

from ..numpy import optim as reference
from ._common import FAST, PRANGE

f32 = np.float32


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _sgd(p, g, lr, wd):
    # p -= lr * (g + wd * p)
    for i in prange(p.size):
        p[i] -= lr * (g[i] + wd * p[i])


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _momentum(p, g, v, lr, mu, wd, nesterov):
    # v = mu * v + g'; p -= lr * v   (nesterov: p -= lr * (g' + mu * v))
    for i in prange(p.size):
        gi = g[i] + wd * p[i]
        v[i] = mu * v[i] + gi
        p[i] -= lr * (gi + mu * v[i] if nesterov else v[i])


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _adagrad(p, g, s, lr, eps, wd):
    # s += g'^2; p -= lr * g' / (sqrt(s) + eps)
    for i in prange(p.size):
        gi = g[i] + wd * p[i]
        s[i] += gi * gi
        p[i] -= lr * gi / (np.sqrt(s[i]) + eps)


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _rmsprop(p, g, s, lr, alpha, eps, wd):
    # s = alpha * s + (1 - alpha) * g'^2; p -= lr * g' / (sqrt(s) + eps)
    for i in prange(p.size):
        gi = g[i] + wd * p[i]
        s[i] = alpha * s[i] + (f32(1.0) - alpha) * gi * gi
        p[i] -= lr * gi / (np.sqrt(s[i]) + eps)


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _adadelta(p, g, s, u, lr, rho, eps, wd):
    # s = rho*s + (1-rho)*g'^2; d = sqrt(u + eps) / sqrt(s + eps) * g'; u = rho*u + (1-rho)*d^2; p -= lr * d
    for i in prange(p.size):
        gi = g[i] + wd * p[i]
        s[i] = rho * s[i] + (f32(1.0) - rho) * gi * gi
        d = np.sqrt(u[i] + eps) / np.sqrt(s[i] + eps) * gi
        u[i] = rho * u[i] + (f32(1.0) - rho) * d * d
        p[i] -= lr * d


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _adam(p, g, m, v, lr, b1, b2, eps, c1, c2, wd):
    # m = b1*m + (1-b1)*g'; v = b2*v + (1-b2)*g'^2; p -= lr * (m / c1) / (sqrt(v / c2) + eps)
    # with c1 = 1 - b1^t, c2 = 1 - b2^t
    for i in prange(p.size):
        gi = g[i] + wd * p[i]
        m[i] = b1 * m[i] + (f32(1.0) - b1) * gi
        v[i] = b2 * v[i] + (f32(1.0) - b2) * gi * gi
        p[i] -= lr * (m[i] / c1) / (np.sqrt(v[i] / c2) + eps)


def _flat(*arrays):
    """Flat views of contiguous float32 arrays, or None if one is not (the caller then uses the reference)."""
    if all(a.dtype == np.float32 and a.flags.c_contiguous for a in arrays):
        return [a.reshape(-1) for a in arrays]
    return None


def _grad(grad):
    return np.ascontiguousarray(grad, dtype=np.float32).reshape(-1)


def sgd_update(param, grad, lr, weight_decay=0.0):
    flat = _flat(param)
    if flat is None:
        return reference.sgd_update(param, grad, lr, weight_decay)
    _sgd(*flat, _grad(grad), f32(lr), f32(weight_decay))


def momentum_update(param, grad, velocity, lr, momentum, weight_decay=0.0):
    flat = _flat(param, velocity)
    if flat is None:
        return reference.momentum_update(param, grad, velocity, lr, momentum, weight_decay)
    p, v = flat
    _momentum(p, _grad(grad), v, f32(lr), f32(momentum), f32(weight_decay), False)


def nesterov_update(param, grad, velocity, lr, momentum, weight_decay=0.0):
    flat = _flat(param, velocity)
    if flat is None:
        return reference.nesterov_update(param, grad, velocity, lr, momentum, weight_decay)
    p, v = flat
    _momentum(p, _grad(grad), v, f32(lr), f32(momentum), f32(weight_decay), True)


def adagrad_update(param, grad, sum_sq, lr, eps, weight_decay=0.0):
    flat = _flat(param, sum_sq)
    if flat is None:
        return reference.adagrad_update(param, grad, sum_sq, lr, eps, weight_decay)
    p, s = flat
    _adagrad(p, _grad(grad), s, f32(lr), f32(eps), f32(weight_decay))


def rmsprop_update(param, grad, sq_avg, lr, alpha, eps, weight_decay=0.0):
    flat = _flat(param, sq_avg)
    if flat is None:
        return reference.rmsprop_update(param, grad, sq_avg, lr, alpha, eps, weight_decay)
    p, s = flat
    _rmsprop(p, _grad(grad), s, f32(lr), f32(alpha), f32(eps), f32(weight_decay))


def adadelta_update(param, grad, sq_avg, delta_avg, lr, rho, eps, weight_decay=0.0):
    flat = _flat(param, sq_avg, delta_avg)
    if flat is None:
        return reference.adadelta_update(param, grad, sq_avg, delta_avg, lr, rho, eps, weight_decay)
    p, s, u = flat
    _adadelta(p, _grad(grad), s, u, f32(lr), f32(rho), f32(eps), f32(weight_decay))


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0):
    flat = _flat(param, m, v)
    if flat is None:
        return reference.adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay)
    p, m_flat, v_flat = flat
    _adam(p, _grad(grad), m_flat, v_flat, f32(lr), f32(beta1), f32(beta2), f32(eps),
          f32(1 - beta1 ** step), f32(1 - beta2 ** step), f32(weight_decay))
