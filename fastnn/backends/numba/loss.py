"""Softmax + cross-entropy fused, mean squared error, accuracy count, with Numba.
Mirrors fastnn/backends/numpy/loss.py.

The arrays are small ((100, 10) logits): one serial pass per row beats the reference's
dozen NumPy calls, each of which costs more in overhead than in arithmetic. No prange:
starting threads would cost more than the work.
"""
import numpy as np
from numba import njit

from ..numpy import loss as reference
from ._common import f32


@njit(cache=True)
def _softmax_row(p, logits, n):
    # p[n] = exp(z[n] - max(z[n])) / sum(exp(z[n] - max(z[n]))); returns (max, sum) for log p
    K = logits.shape[1]
    top = logits[n, 0]
    for k in range(1, K):
        top = max(top, logits[n, k])
    total = np.float32(0.0)
    for k in range(K):
        e = np.exp(logits[n, k] - top)
        p[n, k] = e
        total += e
    for k in range(K):
        p[n, k] /= total
    return top, total


@njit(cache=True)
def _softmax(p, logits):
    # logits (N, K) -> p (N, K): p = exp(z - z.max(1)) / sum(exp(z - z.max(1)))
    for n in range(logits.shape[0]):
        _softmax_row(p, logits, n)


@njit(cache=True)
def _cross_entropy(p, logits, labels, smoothing):
    # logits (N, K), labels (N,) -> p = softmax(logits) (N, K),
    # mean(-(1 - smoothing) * log p[n, labels[n]] - smoothing * log p[n].mean())
    # (the log-probability is taken as shifted - log(sum exp(shifted)), so it never sees log(0))
    N, K = logits.shape
    loss = 0.0
    for n in range(N):
        if labels[n] < 0 or labels[n] >= K:  # an index out of bounds would read any memory
            raise IndexError("softmax_cross_entropy: a label lies outside 0..K-1")
        top, total = _softmax_row(p, logits, n)
        log_total = np.log(total)
        loss -= (1 - smoothing) * (logits[n, labels[n]] - top - log_total)
        if smoothing != 0:
            row_mean = 0.0
            for k in range(K):
                row_mean += logits[n, k] - top - log_total
            loss -= smoothing * row_mean / K
    return loss / N


@njit(cache=True)
def _cross_entropy_backward(dlogits, p, labels, smoothing):
    # dlogits = (p - (1 - smoothing) * onehot(labels) - smoothing / K) / N
    N, K = p.shape
    scale = np.float32(1.0 / N)
    spread = np.float32(smoothing / K)
    for n in range(N):
        for k in range(K):
            dlogits[n, k] = (p[n, k] - spread) * scale
        dlogits[n, labels[n]] -= np.float32(1 - smoothing) * scale


@njit(cache=True)
def _count_correct(logits, labels):
    # (logits.argmax(axis=1) == labels).sum()
    correct = 0
    for n in range(logits.shape[0]):
        if np.argmax(logits[n]) == labels[n]:
            correct += 1
    return correct


def softmax(logits):
    # (N, K) -> (N, K), each row shifted by its max so exp cannot overflow
    logits = f32(logits)
    p = np.empty_like(logits)
    _softmax(p, logits)
    return p


def softmax_cross_entropy(logits, labels, smoothing=0.0):
    # logits (N, K), labels int64 (N,) -> mean of -(q * log softmax(logits)).sum(1),
    # q = (1 - smoothing) * onehot(labels) + smoothing / K
    logits, labels = f32(logits), np.ascontiguousarray(labels, dtype=np.int64)
    p = np.empty_like(logits)
    loss = _cross_entropy(p, logits, labels, float(smoothing))
    return float(loss), (p, labels, float(smoothing))


def softmax_cross_entropy_backward(cache):
    # dlogits = (softmax - q) / N
    p, labels, smoothing = cache
    dlogits = np.empty_like(p)
    _cross_entropy_backward(dlogits, p, labels, smoothing)
    return dlogits


def count_correct(logits, labels):
    return int(_count_correct(f32(logits), np.ascontiguousarray(labels, dtype=np.int64)))


mse_loss = reference.mse_loss                    # nothing faster: two vectorised expressions, off the hot path
mse_loss_backward = reference.mse_loss_backward  # nothing faster: one vectorised division
