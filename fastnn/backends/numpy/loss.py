"""Softmax + cross-entropy fused (numerically stable), mean squared error, accuracy count."""
import numpy as np


def softmax(logits):
    # (N, K) -> (N, K), each row shifted by its max so exp cannot overflow
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits, labels, smoothing=0.0):
    # logits (N, K), labels int64 (N,) -> mean over n of -(q[n] * log softmax(logits)[n]).sum(),
    # q[n] = (1 - smoothing) * onehot(labels[n]) + smoothing / K   (label smoothing; 0: plain)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = -log_p[rows, labels].mean()
    if smoothing:
        loss = (1 - smoothing) * loss - smoothing * log_p.mean(axis=1).mean()
    return float(loss), (log_p, labels, smoothing)


def softmax_cross_entropy_backward(cache):
    # dlogits = (softmax - q) / N, q the (smoothed) target above
    log_p, labels, smoothing = cache
    dlogits = np.exp(log_p)
    if smoothing:
        dlogits -= dlogits.dtype.type(smoothing / log_p.shape[1])
    dlogits[np.arange(len(labels)), labels] -= dlogits.dtype.type(1 - smoothing)
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
