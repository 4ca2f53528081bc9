"""Chapter 4: loss functions by hand, then fastnn's.

The network's output (probabilities, after softmax) y for ten classes, the target t one-hot on class 2:

    mean squared error   E = 1/2 * sum_k (y_k - t_k)^2
    cross-entropy        E = -sum_k t_k log(y_k)      (= -log of the probability of the right class)

A guess that puts 0.6 on the right class scores MSE 0.0975 and CE 0.51; the same guess
on the wrong class (7) scores 0.5975 and 2.30.

    python examples/losses.py
"""
import numpy as np

import fastnn

T = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=float)  # the right answer is "2"
Y_RIGHT = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])  # most on "2"
Y_WRONG = np.array([0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0])  # most on "7"


def mean_squared_error(y, t):
    return 0.5 * np.sum((y - t) ** 2)


def cross_entropy_error(y, t):
    delta = 1e-7  # log(0) is -inf: a tiny shift keeps it finite
    return -np.sum(t * np.log(y + delta))


def fastnn_mse(y, t):
    """fastnn.MeanSquaredError on a batch of one (its 0.5 * sum / N is the textbook's sum then)."""
    K = fastnn.backends.get()
    as_batch = lambda a: K.to_device(np.asarray(a, dtype=np.float32).reshape(1, -1))
    return fastnn.MeanSquaredError().forward(as_batch(y), as_batch(t))


def fastnn_cross_entropy(y, label):
    """fastnn.SoftmaxCrossEntropy takes scores (logits), not probabilities: softmax(log y) = y,
    so the logits log(y) give back the textbook's -log y[label]."""
    K = fastnn.backends.get()
    logits = K.to_device(np.log(np.asarray(y, dtype=np.float32) + np.float32(1e-7)).reshape(1, -1))
    return fastnn.SoftmaxCrossEntropy().forward(logits, K.to_device(np.array([label], dtype=np.int64)))


def main():
    for name, y in (("right guess (0.6 on 2)", Y_RIGHT), ("wrong guess (0.6 on 7)", Y_WRONG)):
        print(f"{name}: MSE {mean_squared_error(y, T):.4f} (fastnn {fastnn_mse(y, T):.4f}), "
              f"cross-entropy {cross_entropy_error(y, T):.4f} (fastnn {fastnn_cross_entropy(y, 2):.4f})")


if __name__ == "__main__":
    main()
