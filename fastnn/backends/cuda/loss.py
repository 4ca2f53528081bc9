"""Softmax + cross-entropy fused, mean squared error, accuracy count, on the GPU.

Mirrors fastnn/backends/numpy/loss.py. The losses and count_correct run in a single block:
each thread takes every REDUCE_THREADS-th row (or element), and the per-thread sums meet in
a shared-memory tree reduction (``block_sum``). Only the scalar comes back to the host
(a 1-element copy); the softmax probabilities stay on the device for the backward pass.
One block is plenty for MNIST-sized batches (rows of 10 logits); it is also deterministic.

``LossLog`` (beyond the contract) is the trainer's way round the read-back: each step's loss
is written into a slot of a device array, and the slots come back together every few steps.
"""
import math

import numpy as np
from numba import cuda, float32, int32

from .arrays import REDUCE_THREADS, block_sum, empty, flat, launch, require_device

NAN = np.float32(np.nan)


@cuda.jit(device=True)
def _row_softmax(probs, logits, n):
    # probs[n] = softmax(logits[n]), shifted by the row's max so exp cannot overflow;
    # returns (max, sum of exp(logits[n] - max))
    K = logits.shape[1]
    m = logits[n, 0]
    for k in range(1, K):
        m = max(m, logits[n, k])
    s = float32(0.0)
    for k in range(K):
        e = math.exp(logits[n, k] - m)
        probs[n, k] = e
        s += e
    for k in range(K):
        probs[n, k] = probs[n, k] / s
    return m, s


@cuda.jit
def softmax_cross_entropy_kernel(loss, slot, probs, logits, labels, smoothing):
    # logits (N, K), labels (N,) int64 -> probs (N, K) = softmax, loss[slot] = the mean over n of
    # -(1 - smoothing) * log p[n, label] - smoothing * log p[n].mean()
    # NumPy: log_p = shifted - log(exp(shifted).sum(1));
    #        loss = -((1 - s) * log_p[arange(N), labels] + s * log_p.mean(1)).mean()
    shared = cuda.shared.array(REDUCE_THREADS, float32)
    t = cuda.threadIdx.x
    N, K = logits.shape[0], logits.shape[1]
    acc = float32(0.0)
    for n in range(t, N, cuda.blockDim.x):
        m, s = _row_softmax(probs, logits, n)
        log_s = math.log(s)
        label = labels[n]
        if 0 <= label < K:
            acc += (float32(1.0) - smoothing) * (log_s - (logits[n, label] - m))  # -log_softmax[n, label]
        else:
            acc += NAN                                     # a bad label makes the loss NaN
        if smoothing != 0:
            row = float32(0.0)
            for k in range(K):
                row += log_s - (logits[n, k] - m)
            acc += smoothing * row / float32(K)
    total = block_sum(shared, acc)
    if t == 0:
        loss[slot] = total / float32(N)


@cuda.jit
def softmax_kernel(probs, logits):
    # logits (N, K) -> probs (N, K), rows sum to 1; one thread per row
    for n in range(cuda.grid(1), logits.shape[0], cuda.gridsize(1)):
        _row_softmax(probs, logits, n)


@cuda.jit
def softmax_cross_entropy_backward_kernel(dlogits, probs, labels, smoothing):
    # dlogits (N, K) = (probs - (1 - smoothing) * onehot(labels) - smoothing / K) / N
    for i in range(cuda.grid(1), dlogits.size, cuda.gridsize(1)):
        N, K = probs.shape[0], probs.shape[1]
        n, k = i // K, i % K
        p = probs[n, k] - smoothing / float32(K)
        if k == labels[n]:
            p -= float32(1.0) - smoothing
        dlogits[n, k] = p / float32(N)


@cuda.jit
def mse_kernel(sum_sq, diff, y, t):
    # diff = y - t (flat); sum_sq (1,) = (diff * diff).sum()
    shared = cuda.shared.array(REDUCE_THREADS, float32)
    tid = cuda.threadIdx.x
    acc = float32(0.0)
    for i in range(tid, diff.size, cuda.blockDim.x):
        d = y[i] - t[i]
        diff[i] = d
        acc += d * d
    total = block_sum(shared, acc)
    if tid == 0:
        sum_sq[0] = total


@cuda.jit
def scale_kernel(out, x, factor):
    # out = x / factor
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = x[i] / factor


@cuda.jit
def count_correct_kernel(count, logits, labels):
    # count (1,) int32 = (logits.argmax(axis=1) == labels).sum(); argmax takes the first maximum
    shared = cuda.shared.array(REDUCE_THREADS, int32)
    t = cuda.threadIdx.x
    N, K = logits.shape[0], logits.shape[1]
    hits = int32(0)
    for n in range(t, N, cuda.blockDim.x):
        best = 0
        for k in range(1, K):
            if logits[n, k] > logits[n, best]:
                best = k
        if best == labels[n]:
            hits += int32(1)
    total = block_sum(shared, hits)
    if t == 0:
        count[0] = total


def softmax(logits):
    # (N, K) -> (N, K)
    require_device("softmax", logits=logits)
    probs = empty(logits.shape)
    softmax_kernel[launch(logits.shape[0])](probs, logits)
    return probs


def softmax_cross_entropy(logits, labels, smoothing=0.0):
    # logits (N, K), labels int64 (N,) -> (mean loss as a Python float, cache);
    # the target is q = (1 - smoothing) * onehot(labels) + smoothing / K
    require_device("softmax_cross_entropy", logits=logits, labels=labels)
    probs, loss = empty(logits.shape), empty(1)
    smoothing = np.float32(smoothing)
    softmax_cross_entropy_kernel[1, REDUCE_THREADS](loss, 0, probs, logits, labels, smoothing)
    return float(loss.copy_to_host()[0]), (probs, labels, smoothing)


def softmax_cross_entropy_backward(cache):
    # dlogits = (softmax - q) / N
    probs, labels, smoothing = cache
    dlogits = empty(probs.shape)
    softmax_cross_entropy_backward_kernel[launch(probs.size)](dlogits, probs, labels, smoothing)
    return dlogits


def mse_loss(y, t):
    # 0.5 * sum((y - t)**2) / N
    require_device("mse_loss", y=y, t=t)
    diff, sum_sq = empty(y.shape), empty(1)
    mse_kernel[1, REDUCE_THREADS](sum_sq, flat(diff), flat(y), flat(t))
    return 0.5 * float(sum_sq.copy_to_host()[0]) / y.shape[0], (diff,)


def mse_loss_backward(cache):
    # dy = diff / N
    (diff,) = cache
    dy = empty(diff.shape)
    scale_kernel[launch(diff.size)](flat(dy), flat(diff), np.float32(diff.shape[0]))
    return dy


def count_correct(logits, labels):
    # number of rows whose argmax equals the label, as a Python int
    require_device("count_correct", logits=logits, labels=labels)
    count = empty(1, np.int32)
    count_correct_kernel[1, REDUCE_THREADS](count, logits, labels)
    return int(count.copy_to_host()[0])


class LossLog:
    """The training losses of up to ``capacity`` steps, kept on the device until ``read``.

    ``add`` is softmax_cross_entropy without the read-back (a copy that waits for the whole step
    to finish): the loss goes to the next slot. The Trainer reads the log when it is ``full``
    (every READBACK_STEPS steps), and before anything that needs the sum so far (a checkpoint,
    an evaluation, the end of the epoch): one copy of a few floats instead of one per step.
    """

    READBACK_STEPS = 50

    def __init__(self, capacity=None):
        self.capacity = self.READBACK_STEPS if capacity is None else int(capacity)
        self.values = empty(self.capacity)
        self.count = 0

    def add(self, logits, labels, smoothing=0.0):
        """The loss of (logits, labels) into the next slot; the cache for softmax_cross_entropy_backward."""
        require_device("LossLog.add", logits=logits, labels=labels)
        if self.full():
            raise RuntimeError(f"the loss log holds {self.capacity} losses: read it first")
        probs, smoothing = empty(logits.shape), np.float32(smoothing)
        softmax_cross_entropy_kernel[1, REDUCE_THREADS](self.values, self.count, probs, logits, labels, smoothing)
        self.count += 1
        return probs, labels, smoothing

    def full(self) -> bool:
        return self.count >= self.capacity

    def read(self) -> np.ndarray:
        """The losses added since the last read, oldest first (float32, host), and an empty log.
        Nothing is copied when there are none."""
        count, self.count = self.count, 0
        if count == 0:
            return np.zeros(0, np.float32)
        return self.values[:count].copy_to_host()

    def clear(self):
        self.count = 0
