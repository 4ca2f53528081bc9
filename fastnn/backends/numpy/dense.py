"""Fully connected layer: y = x @ W + b (the textbook's Affine)."""


def dense_forward(x, W, b):
    # x (N, D), W (D, M), b (M,) -> y (N, M)
    return x @ W + b


def dense_backward(dy, x, W, need_dx=True):
    # dy (N, M) -> dx (N, D) or None (the first layer's), dW (D, M), db (M,)
    return (dy @ W.T if need_dx else None), x.T @ dy, dy.sum(axis=0)
