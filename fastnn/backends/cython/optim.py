"""Optimizer updates, in place on the parameter and its state. Mirrors ../numpy/optim.py
via fastnn_ext/_optim.pyx (one fused pass over memory per update).

The parameter and its state must be writable C-contiguous float arrays (the layers and
optimizers allocate them so); the gradient may be anything array-like: it is only read.
"""
from fastnn_ext import _optim

from ._prep import flat_inplace, flat_like


def sgd_update(param, grad, lr, weight_decay=0.0):
    p = flat_inplace(param, "param")
    _optim.sgd_update(p, flat_like(grad, p, "grad"), lr, weight_decay)


def momentum_update(param, grad, velocity, lr, momentum, weight_decay=0.0):
    p = flat_inplace(param, "param")
    _optim.momentum_update(p, flat_like(grad, p, "grad"), flat_inplace(velocity, "velocity"),
                           lr, momentum, weight_decay)


def nesterov_update(param, grad, velocity, lr, momentum, weight_decay=0.0):
    p = flat_inplace(param, "param")
    _optim.nesterov_update(p, flat_like(grad, p, "grad"), flat_inplace(velocity, "velocity"),
                           lr, momentum, weight_decay)


def adagrad_update(param, grad, sum_sq, lr, eps, weight_decay=0.0):
    p = flat_inplace(param, "param")
    _optim.adagrad_update(p, flat_like(grad, p, "grad"), flat_inplace(sum_sq, "sum_sq"),
                          lr, eps, weight_decay)


def rmsprop_update(param, grad, sq_avg, lr, alpha, eps, weight_decay=0.0):
    p = flat_inplace(param, "param")
    _optim.rmsprop_update(p, flat_like(grad, p, "grad"), flat_inplace(sq_avg, "sq_avg"),
                          lr, alpha, eps, weight_decay)


def adadelta_update(param, grad, sq_avg, delta_avg, lr, rho, eps, weight_decay=0.0):
    p = flat_inplace(param, "param")
    _optim.adadelta_update(p, flat_like(grad, p, "grad"), flat_inplace(sq_avg, "sq_avg"),
                           flat_inplace(delta_avg, "delta_avg"), lr, rho, eps, weight_decay)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0):
    p = flat_inplace(param, "param")
    _optim.adam_update(p, flat_like(grad, p, "grad"), flat_inplace(m, "m"), flat_inplace(v, "v"),
                       lr, beta1, beta2, eps, step, weight_decay)
