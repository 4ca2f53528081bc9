"""The named architectures that ``fastnn train --model NAME`` builds."""
import numpy as np

from .errors import ConfigError
from .layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from .model import Sequential

MNIST_SHAPE = (1, 28, 28)


def simple_cnn(rng):
    """The textbook's SimpleConvNet: conv 30x5x5 -> ReLU -> max-pool 2 -> dense 4320->100 -> ReLU -> dense 100->10."""
    return [
        Conv2D(1, 30, 5, stride=1, pad=0, rng=rng), ReLU(), MaxPool2D(2),
        Flatten(), Dense(30 * 12 * 12, 100, rng=rng), ReLU(), Dense(100, 10, rng=rng),
    ]


def pytorch_net(rng):
    """PyTorch's examples/mnist Net: two 3x3 convs (32, 64), max-pool, dropout, dense 9216->128->10."""
    return [
        Conv2D(1, 32, 3, rng=rng), ReLU(), Conv2D(32, 64, 3, rng=rng), ReLU(), MaxPool2D(2), Dropout(0.25),
        Flatten(), Dense(64 * 12 * 12, 128, rng=rng), ReLU(), Dropout(0.5), Dense(128, 10, rng=rng),
    ]


def deep_cnn(rng):
    """The textbook's DeepConvNet: six 3x3 convs (16, 16, 32, 32, 64, 64), a max-pool after every
    second, dense 1024->50 -> ReLU -> dropout -> dense 50->10 -> dropout; He initialisation.

    As in the book's code, the fourth conv pads by 2 (the others by 1): 14x14 -> 16x16, which
    is what makes the last feature map 64x4x4 = 1024.
    """
    def conv(c_in, c_out, pad=1):
        return [Conv2D(c_in, c_out, 3, pad=pad, init="he", rng=rng), ReLU()]
    return [
        *conv(1, 16), *conv(16, 16), MaxPool2D(2),
        *conv(16, 32), *conv(32, 32, pad=2), MaxPool2D(2),
        *conv(32, 64), *conv(64, 64), MaxPool2D(2),
        Flatten(), Dense(64 * 4 * 4, 50, init="he", rng=rng), ReLU(), Dropout(0.5),
        Dense(50, 10, init="he", rng=rng), Dropout(0.5),
    ]


def speedrun_net(rng):
    """The net of the fastest published one-epoch 99% MNIST recipe in PyTorch: conv 24x5x5 -> ReLU ->
    max-pool 2 -> conv 32x3x3 -> ReLU -> max-pool 2 -> dense 800->256 -> ReLU -> dense 256->10.

    The recipe pools before its ReLUs; max-pooling and ReLU commute, so this order computes the
    same function and runs as two fused Conv2D-ReLU-MaxPool2D blocks (fastnn/fusion.py).
    """
    return [
        Conv2D(1, 24, 5, rng=rng), ReLU(), MaxPool2D(2),
        Conv2D(24, 32, 3, rng=rng), ReLU(), MaxPool2D(2),
        Flatten(), Dense(32 * 5 * 5, 256, rng=rng), ReLU(), Dense(256, 10, rng=rng),
    ]


def mlp(rng):
    """784 -> 100 -> 100 -> 100 -> 10 with ReLU."""
    sizes = [28 * 28, 100, 100, 100]
    hidden = [layer for d_in, d_out in zip(sizes, sizes[1:]) for layer in (Dense(d_in, d_out, rng=rng), ReLU())]
    return [Flatten(), *hidden, Dense(100, 10, rng=rng)]


MODELS = {"simple-cnn": simple_cnn, "pytorch-net": pytorch_net, "deep-cnn": deep_cnn, "mlp": mlp,
          "speedrun-net": speedrun_net}


def build(name, seed=0, fuse=None) -> Sequential:
    """A freshly initialised named model; the same seed gives the same weights. ``fuse``: see
    Sequential (None: FASTNN_FUSION decides, on by default)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    rng = np.random.default_rng(seed)
    return Sequential(MODELS[name](rng), MNIST_SHAPE, name=name, rng=rng, fuse=fuse)
