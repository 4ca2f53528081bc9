"""Property tests: every layer decides from the shape and dtype alone whether it can take an array,
before any kernel runs. With the kernel table replaced by tripwires, an array of any shape either
gets a ShapeError that names the layer, or (exactly when the shape is one the layer takes) reaches
a kernel. (Agreement between backends is tests/backends/test_properties.py's job.)"""
import contextlib
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnn import backends
from fastnn.backends import contract
from fastnn.errors import ShapeError
from fastnn.layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid,
                           Tanh)
from fastnn.model import Sequential

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class KernelCalled(Exception):
    pass


def tripwire_table():
    """A kernel table whose every kernel raises KernelCalled."""
    def trip(name):
        def kernel(*args, **kwargs):
            raise KernelCalled(name)
        return kernel
    return types.SimpleNamespace(NAME="tripwire", **{name: trip(name) for name in contract.NAMES})


@contextlib.contextmanager
def tripwires():
    before = backends._active
    backends._active = tripwire_table()
    try:
        yield
    finally:
        backends._active = before


def outcome(layer, x):
    """'shape' if the layer refused x with a ShapeError naming itself, 'kernel' if x reached a kernel."""
    with tripwires():
        try:
            layer.forward(x, train=True)
        except ShapeError as e:
            assert str(e).startswith(f"{type(layer).__name__}: "), str(e)
            return "shape"
        except KernelCalled:
            return "kernel"
    return "no kernel"


shapes = st.lists(st.integers(0, 7), min_size=0, max_size=5).map(tuple)
float32 = np.float32


@SETTINGS
@given(in_features=st.integers(1, 6), shape=shapes)
def test_dense(in_features, shape):
    layer = Dense(in_features, 3)
    takes = len(shape) == 2 and shape[0] >= 1 and shape[1] == in_features
    assert outcome(layer, np.zeros(shape, float32)) == ("kernel" if takes else "shape")


@SETTINGS
@given(channels=st.integers(1, 3), kernel=st.integers(1, 4), stride=st.integers(1, 3), pad=st.integers(0, 2),
       shape=shapes)
def test_conv2d(channels, kernel, stride, pad, shape):
    layer = Conv2D(channels, 2, kernel, stride=stride, pad=pad)
    takes = (len(shape) == 4 and shape[0] >= 1 and shape[1] == channels
             and shape[2] + 2 * pad >= kernel and shape[3] + 2 * pad >= kernel)
    assert outcome(layer, np.zeros(shape, float32)) == ("kernel" if takes else "shape")


@SETTINGS
@given(kind=st.sampled_from([MaxPool2D, AvgPool2D]), size=st.integers(1, 4), stride=st.integers(1, 3),
       data=st.data(), shape=shapes)
def test_pooling(kind, size, stride, data, shape):
    pad = data.draw(st.integers(0, size // 2))
    layer = kind(size, stride=stride, pad=pad)
    takes = len(shape) == 4 and shape[0] >= 1 and shape[2] + 2 * pad >= size and shape[3] + 2 * pad >= size
    assert outcome(layer, np.zeros(shape, float32)) == ("kernel" if takes else "shape")


@SETTINGS
@given(features=st.integers(1, 5), shape=shapes)
def test_batchnorm(features, shape):
    takes = len(shape) in (2, 4) and shape[0] >= 1 and shape[1] == features
    assert outcome(BatchNorm(features), np.zeros(shape, float32)) == ("kernel" if takes else "shape")


@SETTINGS
@given(kind=st.sampled_from([ReLU, Sigmoid, Tanh, lambda: Dropout(0.5)]), shape=shapes)
def test_elementwise(kind, shape):
    takes = len(shape) >= 1 and shape[0] >= 1
    assert outcome(kind(), np.zeros(shape, float32)) == ("kernel" if takes else "shape")


@SETTINGS
@given(shape=shapes)
def test_flatten(shape):
    takes = len(shape) >= 1 and shape[0] >= 1
    assert outcome(Flatten(), np.zeros(shape, float32)) == ("no kernel" if takes else "shape")


dtypes = st.sampled_from([np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_, np.complex64])


@SETTINGS
@given(dtype=dtypes, layer=st.sampled_from(["dense", "conv", "pool", "relu", "batchnorm"]))
def test_wrong_dtypes_never_reach_a_kernel(dtype, layer):
    layer, shape = {"dense": (Dense(4, 2), (2, 4)), "conv": (Conv2D(1, 2, 3), (2, 1, 5, 5)),
                    "pool": (MaxPool2D(2), (2, 1, 4, 4)), "relu": (ReLU(), (2, 3)),
                    "batchnorm": (BatchNorm(4), (2, 4))}[layer]
    takes = np.dtype(dtype).kind == "f" and (not layer.params or np.dtype(dtype) == np.float32)
    assert outcome(layer, np.zeros(shape, dtype)) == ("kernel" if takes else "shape")


@SETTINGS
@given(shape=shapes)
def test_a_model_refuses_before_its_first_layer(shape):
    rng = np.random.default_rng(0)
    model = Sequential([Conv2D(1, 2, 3, rng=rng), ReLU(), Flatten(), Dense(2 * 4 * 4, 3, rng=rng)], (1, 6, 6),
                       name="net")
    with tripwires():
        try:
            model.forward(np.zeros(shape, float32))
        except ShapeError as e:
            assert str(e).startswith("net: expected input of shape (N, 1, 6, 6)")
            assert shape[1:] != (1, 6, 6) or shape[0] == 0
        except KernelCalled:
            assert shape[1:] == (1, 6, 6) and shape[0] >= 1
        else:  # its first layer is a Conv2D: the model either refuses or reaches that kernel
            pytest.fail(f"an input of shape {shape} neither was refused nor reached a kernel")


@SETTINGS
@given(n=st.integers(1, 4), dy_shape=shapes)
def test_backward_refuses_a_gradient_of_the_wrong_shape(n, dy_shape):
    backends.use("numpy")
    layers = [(Dense(3, 2), (n, 3)), (Conv2D(1, 2, 3), (n, 1, 5, 5)), (MaxPool2D(2), (n, 2, 4, 4)),
              (ReLU(), (n, 3)), (BatchNorm(2), (n, 2)), (Flatten(), (n, 2, 2))]
    for layer, shape in layers:
        y = layer.forward(np.ones(shape, float32))
        with tripwires():
            try:
                layer.backward(np.zeros(dy_shape, float32))
            except ShapeError as e:
                assert str(e).startswith(f"{type(layer).__name__}: expected a gradient of shape {y.shape}")
                assert dy_shape != y.shape
            except KernelCalled:
                assert dy_shape == y.shape
            else:
                assert dy_shape == y.shape and isinstance(layer, Flatten)


def test_the_tripwire_table_is_complete():
    assert contract.missing(tripwire_table()) == []
    with tripwires(), pytest.raises(KernelCalled):
        backends.get().relu_forward(np.zeros(1, float32))
