"""Fully connected layer: y = x @ W + b (the textbook's Affine)."""


def dense_forward(x, W, b):
    # x (N, D), W (D, M), b (M,) -> y (N, M)
    return x @ W + b


def dense_backward(dy, x, W):
    # dy (N, M) -> dx (N, D), dW (D, M), db (M,)
    return dy @ W.T, x.T @ dy, dy.sum(axis=0)
