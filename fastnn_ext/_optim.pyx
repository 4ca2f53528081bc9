"""Optimizer updates, in place on the parameter and its state (PyTorch's formulas).
Mirrors fastnn/backends/numpy/optim.py.

One pass over memory per update: each element's decayed gradient, state and parameter
are computed together in a single ``prange`` (the reference makes several passes).
Weight decay is L2 added to the gradient, g = grad + weight_decay * param; the
gradient array itself is only read. Arrays arrive flattened to 1-D.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastnn_ext._common cimport FASTNN_OPENMP, fsqrt, threads_for

OPENMP = bool(FASTNN_OPENMP)  # compiled with OpenMP; False: the serial build (_omp_shim.h)


def sgd_update(floating[::1] param, const floating[::1] grad, double lr, double weight_decay):
    # param -= lr * (grad + wd * param)
    cdef Py_ssize_t n = param.shape[0], i
    cdef floating lr_ = lr, wd = weight_decay
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        param[i] = param[i] - lr_ * (grad[i] + wd * param[i])


def momentum_update(floating[::1] param, const floating[::1] grad, floating[::1] velocity,
                    double lr, double momentum, double weight_decay):
    # v = momentum * v + g; param -= lr * v
    cdef Py_ssize_t n = param.shape[0], i
    cdef floating lr_ = lr, mu = momentum, wd = weight_decay, g
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        g = grad[i] + wd * param[i]
        velocity[i] = mu * velocity[i] + g
        param[i] = param[i] - lr_ * velocity[i]


def nesterov_update(floating[::1] param, const floating[::1] grad, floating[::1] velocity,
                    double lr, double momentum, double weight_decay):
    # v = momentum * v + g; param -= lr * (g + momentum * v)
    cdef Py_ssize_t n = param.shape[0], i
    cdef floating lr_ = lr, mu = momentum, wd = weight_decay, g
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        g = grad[i] + wd * param[i]
        velocity[i] = mu * velocity[i] + g
        param[i] = param[i] - lr_ * (g + mu * velocity[i])


def adagrad_update(floating[::1] param, const floating[::1] grad, floating[::1] sum_sq,
                   double lr, double eps, double weight_decay):
    # s += g^2; param -= lr * g / (sqrt(s) + eps)
    cdef Py_ssize_t n = param.shape[0], i
    cdef floating lr_ = lr, eps_ = eps, wd = weight_decay, g
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        g = grad[i] + wd * param[i]
        sum_sq[i] = sum_sq[i] + g * g
        param[i] = param[i] - lr_ * g / (fsqrt(sum_sq[i]) + eps_)


def rmsprop_update(floating[::1] param, const floating[::1] grad, floating[::1] sq_avg,
                   double lr, double alpha, double eps, double weight_decay):
    # s = alpha * s + (1 - alpha) * g^2; param -= lr * g / (sqrt(s) + eps)
    cdef Py_ssize_t n = param.shape[0], i
    cdef floating lr_ = lr, a = alpha, one_minus_a = 1 - alpha, eps_ = eps
    cdef floating wd = weight_decay, g
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        g = grad[i] + wd * param[i]
        sq_avg[i] = a * sq_avg[i] + one_minus_a * g * g
        param[i] = param[i] - lr_ * g / (fsqrt(sq_avg[i]) + eps_)


def adadelta_update(floating[::1] param, const floating[::1] grad, floating[::1] sq_avg,
                    floating[::1] delta_avg, double lr, double rho, double eps,
                    double weight_decay):
    # s = rho*s + (1-rho)*g^2; d = sqrt(u + eps) / sqrt(s + eps) * g;
    # u = rho*u + (1-rho)*d^2; param -= lr * d
    cdef Py_ssize_t n = param.shape[0], i
    cdef floating lr_ = lr, r = rho, one_minus_r = 1 - rho, eps_ = eps
    cdef floating wd = weight_decay, g, d
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        g = grad[i] + wd * param[i]
        sq_avg[i] = r * sq_avg[i] + one_minus_r * g * g
        d = fsqrt((delta_avg[i] + eps_) / (sq_avg[i] + eps_)) * g  # one square root, not two
        delta_avg[i] = r * delta_avg[i] + one_minus_r * d * d
        param[i] = param[i] - lr_ * d


def adam_update(floating[::1] param, const floating[::1] grad, floating[::1] m,
                floating[::1] v, double lr, double beta1, double beta2, double eps, long step,
                double weight_decay):
    # m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    # param -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    cdef Py_ssize_t n = param.shape[0], i
    cdef floating lr_ = lr, b1 = beta1, b2 = beta2, eps_ = eps, wd = weight_decay, g
    cdef floating one_minus_b1 = 1 - beta1, one_minus_b2 = 1 - beta2
    # the bias corrections as factors: multiplying is cheaper than dividing
    cdef floating lr_hat = lr / (1 - beta1 ** step), v_scale = 1 / (1 - beta2 ** step)
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        g = grad[i] + wd * param[i]
        m[i] = b1 * m[i] + one_minus_b1 * g
        v[i] = b2 * v[i] + one_minus_b2 * g * g
        param[i] = param[i] - lr_hat * m[i] / (fsqrt(v[i] * v_scale) + eps_)


def running_average_update(floating[::1] avg, const floating[::1] value, double momentum):
    # avg = momentum * avg + (1 - momentum) * value, in place
    cdef Py_ssize_t n = avg.shape[0], i
    cdef floating mu = momentum, one_minus_mu = 1 - momentum
    for i in prange(n, nogil=True, num_threads=threads_for(n), schedule="static"):
        avg[i] = mu * avg[i] + one_minus_mu * value[i]
