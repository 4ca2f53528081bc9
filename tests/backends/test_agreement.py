"""Every contract kernel of every compiled backend against the NumPy reference.

Fresh random float32 inputs: odd sizes, stride 2, padding, batch 1, non-contiguous views.
Tolerances are float32's (rtol 2e-4): a wrong index moves values by O(1) and fails.
"""
import numpy as np
import pytest

from fastnn.backends import contract

from .agree import assert_close, conv_algorithms, forced_conv_algorithm, noncontiguous, run, to_numpy
from ..conftest import SIMULATED_CUDA


def small_only(K):
    """The CUDA simulator runs every thread in Python: keep its shapes tiny."""
    return K.NAME == "cuda" and SIMULATED_CUDA


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_contract_is_complete(candidate):
    assert contract.missing(candidate) == []


# ---------------------------------------------------------------------------------- dense

DENSE_SHAPES = [(1, 7, 3), (13, 33, 17), (64, 128, 10), (100, 4320, 100)]


@pytest.mark.parametrize("n,d,m", DENSE_SHAPES)
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_dense(candidate, reference, rng, n, d, m, layout):
    if small_only(candidate) and n * d * m > 20000:
        pytest.skip("large GEMM shape: real GPU only (the simulator is too slow)")
    x, W, b, dy = randn(rng, n, d), randn(rng, d, m), randn(rng, m), randn(rng, n, m)
    if layout == "strided":
        x, dy = noncontiguous(x), noncontiguous(dy)
    y, _ = run(candidate, "dense_forward", x, W, b)
    assert_close(candidate.to_host(y), reference.dense_forward(x, W, b), np.sqrt(d), "y")
    grads, _ = run(candidate, "dense_backward", dy, x, W)
    for got, want, name, length in zip(to_numpy(candidate, grads), reference.dense_backward(dy, x, W),
                                       ("dx", "dW", "db"), (m, n, n)):
        assert got.shape == want.shape and got.dtype == np.float32, name
        assert_close(got, want, np.sqrt(length), name)


# ----------------------------------------------------------------------------------- conv

# (N, C, H, W, F, K, stride, pad)
CONV_CASES = [
    (1, 1, 28, 28, 30, 5, 1, 0),     # simple-cnn's first layer, batch 1
    (2, 3, 9, 7, 4, 3, 2, 1),        # odd sizes, stride 2, padding
    (3, 2, 8, 8, 5, 3, 1, 1),
    (2, 4, 10, 11, 3, 2, 2, 0),      # even kernel, stride 2
    (4, 32, 12, 12, 16, 3, 1, 0),    # many input channels (pytorch-net's second conv, smaller)
    (1, 2, 5, 5, 3, 3, 1, 1),        # batch 1, two channels, padding
    (3, 5, 7, 9, 6, 3, 1, 0),        # odd sizes: ragged Winograd tiles
    (2, 16, 14, 14, 32, 3, 1, 2),    # pad 2 (deep-cnn's fourth conv)
    (2, 7, 9, 11, 5, 3, 2, 2),       # stride 2 with pad 2
    (3, 64, 8, 8, 64, 3, 1, 1),      # 64 channels (deep-cnn's last conv)
]
SIM_CONV_CASES = {1, 2, 5}  # indexes of the cases small enough for the CUDA simulator


def _conv_case(candidate, index):
    if small_only(candidate) and index not in SIM_CONV_CASES:
        pytest.skip("large conv shape: real GPU only (the simulator is too slow)")


@pytest.mark.parametrize("index", range(len(CONV_CASES)))
def test_im2col_col2im(candidate, reference, rng, index):
    _conv_case(candidate, index)
    n, c, h, w, f, k, s, p = CONV_CASES[index]
    x = randn(rng, n, c, h, w)
    col, _ = run(candidate, "im2col", x, k, k, s, p)
    want = reference.im2col(x, k, k, s, p)
    np.testing.assert_array_equal(candidate.to_host(col), want)  # a pure copy: exact
    dcol = randn(rng, *want.shape)
    back, _ = run(candidate, "col2im", dcol, x.shape, k, k, s, p)
    assert_close(candidate.to_host(back), reference.col2im(dcol, x.shape, k, k, s, p), k, "col2im")


@pytest.mark.parametrize("index", range(len(CONV_CASES)))
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_conv2d(candidate, reference, rng, index, layout):
    """Every convolution algorithm of the backend (forced with FASTNN_CONV_ALGO), wherever it applies."""
    _conv_case(candidate, index)
    n, c, h, w, f, k, s, p = CONV_CASES[index]
    x, W, b = randn(rng, n, c, h, w), randn(rng, f, c, k, k), randn(rng, f)
    want_y, want_cache = reference.conv2d_forward(x, W, b, s, p)
    dy = randn(rng, *want_y.shape)
    want = reference.conv2d_backward(dy, want_cache)
    if layout == "strided":
        x, dy = noncontiguous(x), noncontiguous(dy)
    ran = set()
    for algorithm in conv_algorithms(candidate):
        with forced_conv_algorithm(algorithm):
            used = candidate.conv2d_algorithm(x.shape, W.shape, s, p)
            if used != algorithm:
                continue  # does not apply to this shape (e.g. Winograd needs 3x3, stride 1)
            ran.add(used)
            (y, cache), _ = run(candidate, "conv2d_forward", x, W, b, s, p)
            assert_close(candidate.to_host(y), want_y, np.sqrt(c * k * k), f"{algorithm} y")
            got = to_numpy(candidate, candidate.conv2d_backward(candidate.to_device(dy), cache))
            for g, wnt, name in zip(got, want, ("dx", "dW", "db")):
                assert g.shape == wnt.shape and g.dtype == np.float32, f"{algorithm} {name}"
                assert_close(g, wnt, np.sqrt(dy.size / f), f"{algorithm} {name}")
            dx, dW, db = candidate.conv2d_backward(candidate.to_device(dy), cache, need_dx=False)
            assert dx is None
            assert_close(candidate.to_host(dW), want[1], np.sqrt(dy.size / f), f"{algorithm} dW without dx")
    assert "im2col" in ran  # the algorithm that applies to every shape always ran


def test_conv2d_algorithm_choice(candidate):
    """The choice is a visible, testable function: it names an algorithm the backend has, and
    FASTNN_CONV_ALGO forces any algorithm wherever it applies."""
    shapes = [((64, 1, 28, 28), (32, 1, 3, 3), 1, 0), ((64, 32, 26, 26), (64, 32, 3, 3), 1, 0),
              ((100, 16, 14, 14), (32, 16, 3, 3), 1, 1), ((8, 4, 9, 9), (6, 4, 3, 3), 2, 1)]
    for x_shape, w_shape, s, p in shapes:
        assert candidate.conv2d_algorithm(x_shape, w_shape, s, p) in conv_algorithms(candidate)
    for algorithm in conv_algorithms(candidate):
        with forced_conv_algorithm(algorithm):
            assert candidate.conv2d_algorithm((64, 32, 26, 26), (64, 32, 3, 3), 1, 0) == algorithm
    with forced_conv_algorithm("im2col"):  # applies to everything, stride 2 included
        assert candidate.conv2d_algorithm((8, 4, 9, 9), (6, 4, 3, 3), 2, 1) == "im2col"


# -------------------------------------------------------------------------------- pooling

# (N, C, H, W, size, stride, pad)
POOL_CASES = [
    (2, 3, 24, 24, 2, 2, 0),   # simple-cnn
    (3, 2, 7, 9, 3, 2, 1),     # odd sizes, overlapping windows, padding
    (1, 1, 5, 5, 2, 1, 0),     # batch 1, stride 1
    (2, 4, 11, 11, 3, 3, 0),   # size 3 leaving a ragged edge
]


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("n,c,h,w,size,stride,pad", POOL_CASES)
def test_pool(candidate, reference, rng, kind, n, c, h, w, size, stride, pad):
    if small_only(candidate) and n * c * h * w > 1000:
        pytest.skip("large pooling shape: real GPU only (the simulator is too slow)")
    x = randn(rng, n, c, h, w)
    (y, cache), _ = run(candidate, f"{kind}_forward", noncontiguous(x), size, stride, pad)
    want_y, want_cache = getattr(reference, f"{kind}_forward")(x, size, stride, pad)
    assert_close(candidate.to_host(y), want_y, 1.0, "y")
    dy = randn(rng, *want_y.shape)
    dx = candidate.to_host(getattr(candidate, f"{kind}_backward")(candidate.to_device(dy), cache))
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert_close(dx, getattr(reference, f"{kind}_backward")(dy, want_cache), size, "dx")


# ---------------------------------------------------------------------------- activations

@pytest.mark.parametrize("shape", [(1, 5), (7, 13), (3, 4, 5, 6)])
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_activation(candidate, reference, rng, act, shape):
    x = 3 * randn(rng, *shape)
    x.flat[0] = 0.0  # relu's kink
    x.flat[-1] = 40.0  # saturated sigmoid/tanh
    y, _ = run(candidate, f"{act}_forward", x)
    want_y = getattr(reference, f"{act}_forward")(x)
    assert_close(candidate.to_host(y), want_y, 1.0, "y")
    dy = randn(rng, *shape)
    dx, _ = run(candidate, f"{act}_backward", dy, want_y)
    assert_close(candidate.to_host(dx), getattr(reference, f"{act}_backward")(dy, want_y), 1.0, "dx")


def test_dropout_with_fixed_mask(candidate, reference, rng):
    x, dy = randn(rng, 4, 3, 5, 5), randn(rng, 4, 3, 5, 5)
    mask = reference.dropout_mask(x.shape, 0.3, rng)
    y, _ = run(candidate, "dropout_forward", x, mask)
    np.testing.assert_allclose(candidate.to_host(y), x * mask, rtol=1e-6)
    dx, _ = run(candidate, "dropout_backward", dy, mask)
    np.testing.assert_allclose(candidate.to_host(dx), dy * mask, rtol=1e-6)


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5])
def test_dropout_mask_statistics(candidate, rng, p):
    shape = (64, 8, 8) if small_only(candidate) else (200, 32, 32)
    mask = candidate.to_host(candidate.dropout_mask(shape, p, rng))
    assert mask.shape == shape and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {np.float32(0), np.float32(1 / (1 - p))}
    kept = (mask > 0).mean()
    assert abs(kept - (1 - p)) < 4 * np.sqrt(p * (1 - p) / mask.size) + 1e-9


# ----------------------------------------------------------------------------- batch norm

@pytest.mark.parametrize("shape", [(16, 7), (4, 3, 5, 5)])
def test_batchnorm(candidate, reference, rng, shape):
    d = shape[1]
    x, gamma, beta = 2 + 3 * randn(rng, *shape), randn(rng, d), randn(rng, d)
    (y, mean, var, cache), _ = run(candidate, "batchnorm_forward", x, gamma, beta, 1e-5)
    want_y, want_mean, want_var, want_cache = reference.batchnorm_forward(x, gamma, beta, 1e-5)
    for got, want, name in [(y, want_y, "y"), (mean, want_mean, "mean"), (var, want_var, "var")]:
        assert_close(candidate.to_host(got), want, 10.0, name)
    dy = randn(rng, *shape)
    got = to_numpy(candidate, candidate.batchnorm_backward(candidate.to_device(dy), cache))
    for g, wnt, name in zip(got, reference.batchnorm_backward(dy, want_cache), ("dx", "dgamma", "dbeta")):
        assert_close(g, wnt, 10.0, name)
    inf, _ = run(candidate, "batchnorm_inference", x, gamma, beta, want_mean, want_var, 1e-5)
    assert_close(candidate.to_host(inf), reference.batchnorm_inference(x, gamma, beta, want_mean, want_var, 1e-5), 10.0)
    avg = randn(rng, d)
    expected = avg.copy()
    reference.running_average_update(expected, want_mean, 0.9)
    moved = candidate.to_device(avg.copy())
    candidate.running_average_update(moved, candidate.to_device(want_mean), 0.9)
    assert_close(candidate.to_host(moved), expected, 1.0, "running average")


# --------------------------------------------------------------------------------- losses

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n,k", [(1, 10), (100, 10), (37, 13)])
def test_softmax_cross_entropy(candidate, reference, rng, n, k, smoothing):
    logits = 5 * randn(rng, n, k)
    logits[0, 0] = 1000.0  # overflows a naive exp
    labels = rng.integers(0, k, n)
    (loss, cache), _ = run(candidate, "softmax_cross_entropy", logits, labels, smoothing)
    want_loss, want_cache = reference.softmax_cross_entropy(logits, labels, smoothing)
    assert isinstance(loss, float) and np.isfinite(loss)
    assert loss == pytest.approx(want_loss, rel=1e-5, abs=1e-5)
    got = candidate.to_host(candidate.softmax_cross_entropy_backward(cache))
    assert_close(got, reference.softmax_cross_entropy_backward(want_cache), 1.0, "dlogits")
    probs, _ = run(candidate, "softmax", logits)
    assert_close(candidate.to_host(probs), reference.softmax(logits), 1.0, "softmax")
    correct, _ = run(candidate, "count_correct", logits, labels)
    assert correct == reference.count_correct(logits, labels)


def test_mse_loss(candidate, reference, rng):
    y, t = randn(rng, 9, 4), randn(rng, 9, 4)
    (loss, cache), _ = run(candidate, "mse_loss", y, t)
    want_loss, want_cache = reference.mse_loss(y, t)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert_close(candidate.to_host(candidate.mse_loss_backward(cache)), reference.mse_loss_backward(want_cache))


# ---------------------------------------------------------------------------------- arrays

def test_arrays(candidate, rng):
    x = randn(rng, 11, 1, 4, 4)
    np.testing.assert_array_equal(candidate.to_host(candidate.to_device(x)), x)
    idx = rng.permutation(11)[:5]
    got, _ = run(candidate, "gather", x, idx)
    np.testing.assert_array_equal(candidate.to_host(got), x[idx])
    labels = rng.integers(0, 10, 11)
    np.testing.assert_array_equal(candidate.to_host(candidate.gather(candidate.to_device(labels), idx)), labels[idx])
    z = candidate.to_host(candidate.zeros((3, 2)))
    assert z.dtype == np.float32 and not z.any()


# ------------------------------------------------------------------------------ optimizers

OPTIMIZERS = {
    # name: (number of state arrays, hyper-parameters after the state)
    "sgd_update": (0, dict(lr=0.1)),
    "momentum_update": (1, dict(lr=0.1, momentum=0.9)),
    "nesterov_update": (1, dict(lr=0.1, momentum=0.9)),
    "adagrad_update": (1, dict(lr=0.1, eps=1e-10)),
    "rmsprop_update": (1, dict(lr=0.01, alpha=0.99, eps=1e-8)),
    "adadelta_update": (2, dict(lr=1.0, rho=0.9, eps=1e-6)),
    "adam_update": (2, dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8)),
}


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_update(candidate, reference, rng, name, weight_decay):
    n_state, hyper = OPTIMIZERS[name]
    shape = (33, 17)
    want_param = randn(rng, *shape)
    want_state = [np.zeros(shape, np.float32) for _ in range(n_state)]
    got_param = candidate.to_device(want_param.copy())
    got_state = [candidate.to_device(s.copy()) for s in want_state]
    for step in range(1, 4):
        grad = randn(rng, *shape)
        extra = dict(step=step) if name == "adam_update" else {}
        getattr(reference, name)(want_param, grad, *want_state, **hyper, **extra, weight_decay=weight_decay)
        grad_dev = candidate.to_device(grad)
        getattr(candidate, name)(got_param, grad_dev, *got_state, **hyper, **extra, weight_decay=weight_decay)
        np.testing.assert_array_equal(candidate.to_host(grad_dev), grad, err_msg="the gradient was written")
    assert_close(candidate.to_host(got_param), want_param, 1.0, "param")
    for i, (g, w) in enumerate(zip(got_state, want_state)):
        assert_close(candidate.to_host(g), w, 1.0, f"state {i}")
