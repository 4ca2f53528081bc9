"""Loss layers: ``forward(y, t) -> float`` then ``backward() -> dy`` (the gradient of the mean loss)."""
from . import backends
from .errors import ShapeError


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy, fused: stable for any logits, and the gradient is
    simply (softmax - onehot) / N. ``t`` holds class indices (int64)."""

    def forward(self, logits, labels):
        if logits.ndim != 2 or labels.shape != (logits.shape[0],):
            raise ShapeError(f"SoftmaxCrossEntropy: expected logits (N, K) and labels (N,), "
                             f"got {tuple(logits.shape)} and {tuple(labels.shape)}")
        loss, self.cache = backends.get().softmax_cross_entropy(logits, labels)
        return loss

    def backward(self):
        return backends.get().softmax_cross_entropy_backward(self.cache)


class MeanSquaredError:
    """0.5 * sum((y - t)^2) / N: the textbook's sum of squares, averaged over the batch."""

    def forward(self, y, t):
        if tuple(y.shape) != tuple(t.shape):
            raise ShapeError(f"MeanSquaredError: prediction {tuple(y.shape)} and target {tuple(t.shape)} differ")
        loss, self.cache = backends.get().mse_loss(y, t)
        return loss

    def backward(self):
        return backends.get().mse_loss_backward(self.cache)
