"""Every layer's backward pass on the reference backend against numerical gradients (float64)."""
import numpy as np
import pytest

from fastnn import backends
from fastnn.errors import ConfigError, ShapeError
from fastnn.gradcheck import numerical_gradient, relative_error
from fastnn.layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid,
                           Tanh)
from fastnn.losses import MeanSquaredError, SoftmaxCrossEntropy

TOL = 1e-7  # relative error of backprop vs central differences in float64


@pytest.fixture(autouse=True)
def numpy_backend():
    backends.use("numpy")


def as_float64(layer):
    for table in (layer.params, layer.buffers):
        for name in table:
            table[name] = table[name].astype(np.float64)
    return layer


def check_layer(layer, x, rng, train=True):
    """Backprop of sum(layer(x) * dy) vs numerical gradients for x and every parameter."""
    layer = as_float64(layer)
    if hasattr(layer, "need_dx"):
        layer.need_dx = True
    dy = rng.standard_normal(layer.forward(x.copy(), train).shape)

    def f(_):
        return float((layer.forward(x, train) * dy).sum())

    f(None)
    dx = layer.backward(dy)
    grads = {name: layer.grads[name].copy() for name in layer.params}
    assert dx.shape == x.shape
    assert relative_error(dx, numerical_gradient(f, x, 1e-6)) < TOL, "dx"
    for name, param in layer.params.items():
        assert grads[name].shape == param.shape
        assert relative_error(grads[name], numerical_gradient(f, param, 1e-6)) < TOL, name


@pytest.mark.parametrize("n", [1, 4])
def test_dense(rng, n):
    check_layer(Dense(7, 5, rng=rng), rng.standard_normal((n, 7)), rng)


@pytest.mark.parametrize("stride,pad,size", [(1, 0, (7, 7)), (2, 1, (9, 8)), (2, 2, (6, 7)), (3, 1, (10, 10))])
def test_conv2d(rng, stride, pad, size):
    check_layer(Conv2D(3, 4, 3, stride=stride, pad=pad, rng=rng), rng.standard_normal((2, 3) + size), rng)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("size,stride,pad,hw", [(2, 2, 0, (8, 8)), (3, 2, 1, (7, 9)), (3, 3, 0, (11, 10)),
                                                 (2, 1, 0, (5, 5))])
def test_pooling(rng, cls, size, stride, pad, hw):
    check_layer(cls(size, stride, pad), rng.standard_normal((2, 3) + hw), rng)


@pytest.mark.parametrize("cls", [ReLU, Sigmoid, Tanh])
def test_activations(rng, cls):
    x = rng.standard_normal((3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep clear of ReLU's kink
    check_layer(cls(), x, rng)


def test_dropout_with_fixed_mask(rng):
    layer = Dropout(0.4)
    x = rng.standard_normal((6, 10))
    layer.fixed_mask = backends.get().dropout_mask(x.shape, 0.4, rng).astype(np.float64)
    check_layer(layer, x, rng)
    assert np.array_equal(layer.forward(x) == 0, layer.fixed_mask == 0)


def test_dropout_is_identity_in_inference(rng):
    x = rng.standard_normal((4, 9)).astype(np.float32)
    layer = Dropout(0.5, rng=rng)
    assert layer.forward(x, train=False) is x
    y = layer.forward(x, train=True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 2 * x[kept], rtol=1e-6)


@pytest.mark.parametrize("shape", [(8, 5), (3, 4, 5, 6)])
def test_batchnorm(rng, shape):
    layer = BatchNorm(shape[1])
    layer.params["gamma"] = rng.standard_normal(shape[1]).astype(np.float32)
    layer.params["beta"] = rng.standard_normal(shape[1]).astype(np.float32)
    check_layer(layer, 3 + 2 * rng.standard_normal(shape), rng)


def test_batchnorm_running_statistics(rng):
    layer = BatchNorm(3, momentum=0.5)
    x = (5 + 2 * rng.standard_normal((400, 3))).astype(np.float32)
    for _ in range(30):
        y = layer.forward(x, train=True)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(layer.buffers["running_mean"], x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.buffers["running_var"], x.var(0), rtol=1e-4)
    np.testing.assert_allclose(layer.forward(x, train=False), y, atol=1e-4)


def test_flatten(rng):
    check_layer(Flatten(), rng.standard_normal((2, 3, 4, 5)), rng)


def test_softmax_cross_entropy_gradient(rng):
    logits, labels = rng.standard_normal((5, 7)), rng.integers(0, 7, 5)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert value == pytest.approx(-np.log(p[np.arange(5), labels]).mean(), rel=1e-12)
    grad = loss.backward()
    assert relative_error(grad, numerical_gradient(lambda z: loss.forward(z, labels), logits, 1e-6)) < TOL


@pytest.mark.parametrize("smoothing", [0.1, 0.5])
def test_label_smoothing_loss_and_gradient(rng, smoothing):
    # the loss against the target q written out: -(q * log softmax).sum(1).mean()
    logits, labels = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    q = np.full((6, 4), smoothing / 4)
    q[np.arange(6), labels] += 1 - smoothing
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    loss = SoftmaxCrossEntropy(smoothing)
    assert loss.forward(logits, labels) == pytest.approx(-(q * log_p).sum(1).mean(), rel=1e-12)
    grad = loss.backward()
    np.testing.assert_allclose(grad, (np.exp(log_p) - q) / 6, rtol=1e-12, atol=1e-15)
    assert relative_error(grad, numerical_gradient(lambda z: loss.forward(z, labels), logits, 1e-6)) < TOL


@pytest.mark.parametrize("smoothing", [-0.1, 1.0, "0.1", None])
def test_label_smoothing_out_of_range_is_refused(smoothing):
    with pytest.raises(ValueError, match=r"smoothing must be a number in \[0, 1\)"):
        SoftmaxCrossEntropy(smoothing)


def test_mean_squared_error_gradient(rng):
    y, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss = MeanSquaredError()
    assert loss.forward(y, t) == pytest.approx(0.5 * ((y - t) ** 2).sum() / 4)
    grad = loss.backward()
    assert relative_error(grad, numerical_gradient(lambda z: loss.forward(z, t), y, 1e-6)) < TOL


def test_first_conv_skips_the_input_gradient(rng):
    from fastnn import Sequential
    model = Sequential([Conv2D(1, 2, 3, rng=rng), Flatten(), Dense(2 * 5 * 5, 3, rng=rng)], (1, 7, 7))
    logits = model.forward(rng.random((2, 1, 7, 7), dtype=np.float32))
    assert model.backward(np.ones_like(logits)) is None
    assert model.layers[0].grads["W"].shape == (2, 1, 3, 3)


@pytest.mark.parametrize("layer,x_shape,expected", [
    (Dense(7, 5), (2, 6), r"Dense: expected input of shape \(N, 7\), got \(2, 6\)"),
    (Conv2D(3, 4, 3), (2, 1, 8, 8), r"Conv2D: expected input of shape \(N, 3, H, W\), got \(2, 1, 8, 8\)"),
    (Conv2D(1, 4, 5), (2, 1, 3, 3), r"Conv2D: a 3x3 input is smaller than the 5x5 kernel"),
    (MaxPool2D(2), (2, 8), r"MaxPool2D: expected input of shape \(N, C, H, W\), got \(2, 8\)"),
    (Dense(7, 5), (0, 7), r"Dense: expected input of shape \(N, 7\), got \(0, 7\)"),
])
def test_wrong_shapes_name_the_layer(layer, x_shape, expected):
    with pytest.raises(ShapeError, match=expected):
        layer.forward(np.zeros(x_shape, np.float32))


@pytest.mark.parametrize("make", [lambda: Dense(0, 3), lambda: Conv2D(1, 2, 3, stride=0), lambda: Dropout(1.0),
                                  lambda: MaxPool2D(2, pad=3), lambda: Dense(3, 3, init="magic")])
def test_bad_layer_arguments(make):
    with pytest.raises(ConfigError):
        make()
