"""Softmax + cross-entropy fused, MSE, accuracy count. Mirrors ../numpy/loss.py
via fastnn_ext/_loss.pyx."""
import numpy as np

from fastnn_ext import _loss

from ._prep import floats


def _labels(labels):
    return np.ascontiguousarray(labels, dtype=np.int64).reshape(-1)


def softmax(logits):
    # (N, K) -> (N, K), rows sum to 1
    (logits,) = floats(logits)
    probs = np.empty_like(logits)
    _loss.softmax(probs, logits)
    return probs


def softmax_cross_entropy(logits, labels, smoothing=0.0):
    # logits (N, K), labels int64 (N,) -> mean of -(q * log softmax(logits)).sum(1),
    # q = (1 - smoothing) * onehot(labels) + smoothing / K
    (logits,) = floats(logits)
    labels = _labels(labels)
    log_p = np.empty_like(logits)
    loss = _loss.softmax_cross_entropy(log_p, logits, labels, smoothing)
    return float(loss), (log_p, labels, smoothing)


def softmax_cross_entropy_backward(cache):
    # dlogits = (softmax - q) / N
    log_p, labels, smoothing = cache
    dlogits = np.empty_like(log_p)
    _loss.softmax_cross_entropy_backward(dlogits, log_p, labels, smoothing)
    return dlogits


def mse_loss(y, t):
    # 0.5 * sum((y - t)**2) / N
    y, t = floats(y, t)
    n = len(y)
    diff = np.empty_like(y)
    loss = _loss.mse_loss(diff.reshape(n, -1), y.reshape(n, -1), t.reshape(n, -1))
    return float(loss), (diff,)


def mse_loss_backward(cache):
    # dy = (y - t) / N
    (diff,) = cache
    n = len(diff)
    dy = np.empty_like(diff)
    _loss.mse_loss_backward(dy.reshape(n, -1), diff.reshape(n, -1))
    return dy


def count_correct(logits, labels):
    (logits,) = floats(logits)
    return int(_loss.count_correct(logits, _labels(labels)))
