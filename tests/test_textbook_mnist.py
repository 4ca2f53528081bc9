"""The textbook's training experiments on the real MNIST (examples/weight_init.py,
examples/regularization.py, examples/mnist_mlp.py): slow, a minute or two in all."""
import functools
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn.regularization import L1, L2
from fastnn.threads import current_threads

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name):
    """Import examples/<name>.py as a module of its own."""
    spec = importlib.util.spec_from_file_location(f"fastnn_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def load(directory):
    return fastnn.load_mnist("mnist", directory, download_missing=False, progress=False)


@pytest.fixture
def mnist(mnist_dir):
    """(x_train, y_train, x_test, y_test), read once for the module (conftest's mnist_dir skips, or
    fails under CI, where the files are missing)."""
    return load(mnist_dir)


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices on shared cores: one thread. With two (Numba's and BLAS's) next to other
    busy processes on a 2-core machine, each parallel region waits for a time slice: measured
    15-30x slower (numpy backend, BLAS) and 200x (numba backend). Restored after."""
    fastnn.backends.get()  # set_threads limits the libraries already loaded
    previous = current_threads()
    fastnn.set_threads(1)
    yield
    fastnn.set_threads(previous)


@pytest.mark.slow
def test_weight_init_small_std_stalls_while_he_learns(mnist):
    """Chapter 6: with std 0.01 a 5-layer ReLU net's loss stays at log(10) = 2.30; He's falls."""
    wi = example("weight_init")
    x_train, y_train, _, _ = mnist
    curves = wi.compare(x_train[:10000], y_train[:10000], steps=300)
    last = {name: losses[-50:].mean() for name, losses in curves.items()}
    assert np.abs(curves["std 0.01"] - math.log(10)).max() < 0.02  # barely moved, ever
    assert last["He"] < 1.0
    assert last["He"] < last["Xavier"] < last["std 0.01"] - 0.2


@pytest.mark.slow
def test_weight_decay_and_l1_on_300_images(mnist):
    """Chapter 6: on 300 images the penalties keep the weights small (L2) and sparse (L1)."""
    reg = example("regularization")
    x_train, y_train, _, _ = mnist
    small = (x_train[:300], y_train[:300])
    plain, curve_plain = reg.train_small(*small, epochs=100, eval_every=100)
    decayed, curve_decayed = reg.train_small(*small, regularizer=L2(0.1), epochs=100, eval_every=100)
    sparse, _ = reg.train_small(*small, regularizer=L1(0.005), epochs=100, eval_every=100)
    assert reg.weight_norm(decayed) < 0.85 * reg.weight_norm(plain)  # 26 vs 35 on numpy
    assert reg.near_zero_fraction(sparse) > 1.8 * reg.near_zero_fraction(plain)  # 28% vs 12%
    assert curve_plain[-1][1] > 0.9  # it does learn the 300 (and more than with the penalty)
    assert curve_decayed[-1][1] < curve_plain[-1][1]


@pytest.mark.slow
def test_mnist_mlp_reaches_96_percent(mnist):
    """Chapters 3-6: the MLP with early stopping, on all of MNIST, at least 96% on the test set."""
    mlp = example("mnist_mlp")
    x_train, y_train, x_test, y_test = mnist
    epochs = []
    model, history = mlp.train(x_train, y_train, x_test, y_test, epochs=8, patience=2, seed=0,
                               on_epoch_end=lambda trainer, metrics: epochs.append(metrics["epoch"]))
    assert len(model.layers) >= 6  # three Dense layers with their ReLUs
    losses = [m["train_loss"] for m in history]
    assert losses[1] < losses[0] * 0.6 and losses[2] < losses[1]  # falling, epoch by epoch
    assert 3 <= len(history) <= 8 and epochs == [m["epoch"] for m in history]
    best = min(history, key=lambda m: m["val_loss"])
    _, accuracy = model.evaluate(x_test, y_test)
    assert accuracy == pytest.approx(best["test_accuracy"])  # early stopping went back to the best epoch
    # seeds 0-5 end at 97.46-98.01% (seed 0: 98.01% on an AVX-512 host, 97.97% on AVX2): 97.5% lay
    # inside that spread (seed 2 fails it). 96% leaves 1.46 points, nearly 3 times the 0.55-point
    # spread; dense layers that pass no gradient back end at 83.6%
    assert accuracy >= 0.96
