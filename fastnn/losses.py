"""Loss layers: ``forward(y, t) -> float`` then ``backward() -> dy`` (the gradient of the mean loss).

They check what the compiled kernels cannot: shapes, dtypes and the range of the labels (a
compiled loss indexes its row by the label, without bounds checks)."""
import math

import numpy as np

from . import backends
from .errors import ConfigError, ShapeError


def check_labels(y, n_images, n_classes, what="labels"):
    """Host labels: whole numbers in [0, n_classes), one per image; returned as int64."""
    y = np.asarray(y)
    if y.shape != (n_images,):
        raise ShapeError(f"{what}: expected shape ({n_images},), one per image, got {y.shape}")
    if y.dtype.kind not in "iu":
        raise ShapeError(f"{what}: expected integer class indices, got dtype {y.dtype}")
    if n_images and (y.min() < 0 or y.max() >= n_classes):
        raise ShapeError(f"{what}: class indices must lie in [0, {n_classes}), found {y.min()}..{y.max()}")
    return y.astype(np.int64, copy=False)


def _describe(a):
    return f"{tuple(a.shape)} {a.dtype}" if hasattr(a, "shape") and hasattr(a, "dtype") else type(a).__name__


def _expect_floats(layer, a, what, ndim=None):
    if not hasattr(a, "shape") or not hasattr(a, "dtype") or np.dtype(a.dtype).kind != "f" \
            or (ndim is not None and len(a.shape) != ndim) or 0 in a.shape:
        raise ShapeError(f"{layer}: expected {what} as a non-empty floating-point array"
                         f"{f' of {ndim} dimensions' if ndim else ''}, got {_describe(a)}")


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy, fused: stable for any logits, and the gradient is
    simply (softmax - q) / N. ``labels`` hold class indices (int64).

    The target q is onehot(labels), or with label smoothing ``smoothing`` = s in [0, 1),
    (1 - s) * onehot(labels) + s / K: the net is no longer pushed to make its logits ever larger
    for a class it already gets right (Szegedy et al. 2016; PyTorch's ``label_smoothing``)."""

    def __init__(self, smoothing=0.0):
        if not (isinstance(smoothing, (int, float)) and 0 <= smoothing < 1):
            raise ConfigError(f"SoftmaxCrossEntropy: smoothing must be a number in [0, 1), got {smoothing!r}"
                             " (0 turns label smoothing off; 0.1 is usual)")
        self.smoothing = float(smoothing)

    def forward(self, logits, labels):
        _expect_floats("SoftmaxCrossEntropy", logits, "logits (N, K)", ndim=2)
        n, k = logits.shape
        if not hasattr(labels, "shape") or tuple(labels.shape) != (n,) or np.dtype(labels.dtype).kind not in "iu":
            raise ShapeError(f"SoftmaxCrossEntropy: expected labels of shape ({n},), integer class indices "
                             f"for logits {tuple(logits.shape)}, got {_describe(labels)}")
        on_host = isinstance(labels, np.ndarray)
        if on_host:  # a device array is checked by its kernel, which makes the loss NaN (below)
            labels = check_labels(labels, n, k, "SoftmaxCrossEntropy: labels")
        K = backends.get()
        loss, self.cache = K.softmax_cross_entropy(logits, labels, self.smoothing)
        if not on_host and not math.isfinite(loss):  # NaN logits, or a label out of range?
            check_labels(K.to_host(labels), n, k, "SoftmaxCrossEntropy: labels")
        return loss

    def forward_logged(self, logits, labels, log):
        """forward with the loss left in ``log`` (a backend's LossLog, cuda's) rather than read
        back now; the trainer reads the log every few steps. ``labels`` are checked already."""
        self.cache = log.add(logits, labels, self.smoothing)

    def backward(self):
        return backends.get().softmax_cross_entropy_backward(self.cache)


class MeanSquaredError:
    """0.5 * sum((y - t)^2) / N: the textbook's sum of squares, averaged over the batch."""

    def forward(self, y, t):
        _expect_floats("MeanSquaredError", y, "the prediction")
        _expect_floats("MeanSquaredError", t, "the target")
        if tuple(y.shape) != tuple(t.shape):
            raise ShapeError(f"MeanSquaredError: prediction {tuple(y.shape)} and target {tuple(t.shape)} differ")
        loss, self.cache = backends.get().mse_loss(y, t)
        return loss

    def backward(self):
        return backends.get().mse_loss_backward(self.cache)
