"""Softmax + cross-entropy fused (numerically stable), mean squared error, accuracy count."""
import numpy as np


def softmax(logits):
    # (N, K) -> (N, K), each row shifted by its max so exp cannot overflow
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits, labels):
    # logits (N, K), labels int64 (N,) -> mean of -log softmax(logits)[n, labels[n]]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = -log_p[rows, labels].mean()
    return float(loss), (log_p, labels)


def softmax_cross_entropy_backward(cache):
    # dlogits = (softmax - onehot(labels)) / N
    log_p, labels = cache
    dlogits = np.exp(log_p)
    dlogits[np.arange(len(labels)), labels] -= 1
    return dlogits / dlogits.dtype.type(len(labels))


def mse_loss(y, t):
    # 0.5 * sum((y - t)**2) / N, the textbook's sum of squares per example
    diff = y - t
    return float(0.5 * (diff * diff).sum() / len(y)), (diff,)


def mse_loss_backward(cache):
    (diff,) = cache
    return diff / diff.dtype.type(len(diff))


def count_correct(logits, labels):
    return int((logits.argmax(axis=1) == labels).sum())
