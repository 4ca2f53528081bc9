"""Softmax + cross-entropy (fused, numerically stable), MSE, accuracy count.
Mirrors fastnn/backends/numpy/loss.py.

The arrays here are (batch, classes), about a thousand numbers: one thread, no prange.
"""
from cython cimport floating
from libc.stdint cimport int64_t

from fastnn_ext._common cimport FASTNN_OPENMP, beats, fexp, flog

OPENMP = bool(FASTNN_OPENMP)  # compiled with OpenMP; False: the serial build (_omp_shim.h)


cdef int _check_labels(const int64_t[::1] labels, Py_ssize_t K) except -1:
    cdef Py_ssize_t n
    for n in range(labels.shape[0]):
        if labels[n] < 0 or labels[n] >= K:
            raise IndexError(f"label {labels[n]} at row {n} is outside 0..{K - 1}")
    return 0


cdef inline floating _exp_row(floating *e, const floating *row, Py_ssize_t K,
                              floating *top) noexcept nogil:
    # The stable softmax's numerator and denominator, shared by softmax and softmax_cross_entropy:
    # top[0] = row[:K].max();  e[:K] = np.exp(row[:K] - top[0]);  returns e[:K].sum()
    # (a NaN in the row is its max, as in np.max: then everything is NaN, as in the reference)
    cdef Py_ssize_t k
    cdef floating total = 0
    top[0] = row[0]
    for k in range(1, K):
        if beats(row[k], top[0]):
            top[0] = row[k]
    for k in range(K):
        e[k] = fexp(row[k] - top[0])
        total += e[k]
    return total


def softmax_cross_entropy(floating[:, ::1] log_p, const floating[:, ::1] logits,
                          const int64_t[::1] labels, double smoothing=0):
    # logits (N, K), labels (N,) -> log_p (N, K) = log softmax(logits); returns the mean over n of
    # -(1 - smoothing) * log_p[n, labels[n]] - smoothing * log_p[n].mean()   (label smoothing)
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], n, k
    cdef floating top, log_total
    cdef double loss = 0, row_sum
    _check_labels(labels, K)
    with nogil:
        for n in range(N):
            # shifted = logits[n] - logits[n].max(); log_p[n] = shifted - log(exp(shifted).sum())
            # (log_p[n] holds the exponentials until it is overwritten)
            log_total = flog(_exp_row(&log_p[n, 0], &logits[n, 0], K, &top))
            row_sum = 0
            for k in range(K):
                log_p[n, k] = logits[n, k] - top - log_total
                row_sum += log_p[n, k]
            loss -= (1 - smoothing) * log_p[n, labels[n]]
            if smoothing != 0:
                loss -= smoothing * row_sum / K
    return loss / N if N else float("nan")


def softmax_cross_entropy_backward(floating[:, ::1] dlogits, const floating[:, ::1] log_p,
                                   const int64_t[::1] labels, double smoothing=0):
    # dlogits = (np.exp(log_p) - (1 - smoothing) * onehot(labels) - smoothing / K) / N
    cdef Py_ssize_t N = log_p.shape[0], K = log_p.shape[1], n, k
    cdef floating inv_n = 1 / <floating> N if N else 0
    cdef floating spread = <floating> (smoothing / K) if K else 0
    cdef floating hit = <floating> (1 - smoothing)
    with nogil:
        for n in range(N):
            for k in range(K):
                dlogits[n, k] = fexp(log_p[n, k]) - spread
            dlogits[n, labels[n]] -= hit
            for k in range(K):
                dlogits[n, k] *= inv_n


def softmax(floating[:, ::1] probs, const floating[:, ::1] logits):
    # probs = exp(logits - max) / exp(logits - max).sum(axis=1, keepdims=True)
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], n, k
    cdef floating top, total
    if K == 0:  # rows of nothing: _exp_row reads row[0]
        return
    with nogil:
        for n in range(N):
            total = _exp_row(&probs[n, 0], &logits[n, 0], K, &top)
            for k in range(K):
                probs[n, k] /= total


def mse_loss(floating[:, ::1] diff, const floating[:, ::1] y, const floating[:, ::1] t):
    # diff = y - t; returns 0.5 * (diff * diff).sum() / N
    cdef Py_ssize_t N = y.shape[0], D = y.shape[1], n, k
    cdef double total = 0
    with nogil:
        for n in range(N):
            for k in range(D):
                diff[n, k] = y[n, k] - t[n, k]
                total += diff[n, k] * diff[n, k]
    return 0.5 * total / N if N else float("nan")


def mse_loss_backward(floating[:, ::1] dy, const floating[:, ::1] diff):
    # dy = diff / N
    cdef Py_ssize_t N = diff.shape[0], D = diff.shape[1], n, k
    cdef floating inv_n = 1 / <floating> N if N else 0
    with nogil:
        for n in range(N):
            for k in range(D):
                dy[n, k] = diff[n, k] * inv_n


def count_correct(const floating[:, ::1] logits, const int64_t[::1] labels):
    # (logits.argmax(axis=1) == labels).sum()   (the first maximum, or the first NaN, wins, as in
    # argmax)
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], n, k, best
    cdef Py_ssize_t correct = 0
    with nogil:
        for n in range(N):
            best = 0
            for k in range(1, K):
                if beats(logits[n, k], logits[n, best]):
                    best = k
            if best == labels[n]:
                correct += 1
    return correct
