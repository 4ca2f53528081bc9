"""The fused kernels (conv + bias + ReLU (+ 2x2 max-pool), dense + bias + ReLU) of every
compiled backend against their specification, the composition of the reference's unfused
kernels (fastnn/backends/composed.py), for every convolution algorithm that applies."""
import numpy as np
import pytest

from .agree import assert_close, conv_algorithms, forced_conv_algorithm, noncontiguous, run, to_numpy
from .test_agreement import CONV_CASES, DENSE_SHAPES, _conv_case, randn, small_only


@pytest.mark.parametrize("index", range(len(CONV_CASES)))
@pytest.mark.parametrize("pool", [False, True], ids=["relu", "relu_pool"])
def test_conv2d_relu(candidate, reference, rng, index, pool):
    _conv_case(candidate, index)
    n, c, h, w, f, k, s, p = CONV_CASES[index]
    name = "conv2d_relu_pool" if pool else "conv2d_relu"
    x, W, b = randn(rng, n, c, h, w), randn(rng, f, c, k, k), randn(rng, f)
    if min(h + 2 * p - k, w + 2 * p - k) // s + 1 < 2 and pool:
        pytest.skip("output smaller than one 2x2 window")
    want_y, want_cache = getattr(reference, name + "_forward")(x, W, b, s, p)
    # the ReLU both passes and blocks (after a max over 4, fewer outputs are zero)
    if want_y.size >= 200:
        assert (want_y > 0).mean() > 0.2 and (want_y == 0).mean() > (0.02 if pool else 0.1)
    dy = randn(rng, *want_y.shape)
    want = getattr(reference, name + "_backward")(dy, want_cache)
    x, dy = noncontiguous(x), noncontiguous(dy)  # the kernels must not assume contiguous inputs
    tolerance = np.sqrt(c * k * k)
    ran = set()
    for algorithm in conv_algorithms(candidate):
        with forced_conv_algorithm(algorithm):
            if candidate.conv2d_algorithm(x.shape, W.shape, s, p) != algorithm:
                continue
            ran.add(algorithm)
            (y, cache), _ = run(candidate, name + "_forward", x, W, b, s, p)
            assert_close(candidate.to_host(y), want_y, tolerance, f"{algorithm} y")
            backward = getattr(candidate, name + "_backward")
            got = to_numpy(candidate, backward(candidate.to_device(dy), cache))
            for g, wnt, what in zip(got, want, ("dx", "dW", "db")):
                assert g.shape == wnt.shape and g.dtype == np.float32, f"{algorithm} {what}"
                assert_close(g, wnt, np.sqrt(dy.size / f) * (4 if pool else 1), f"{algorithm} {what}")
            dx, dW, db = backward(candidate.to_device(dy), cache, need_dx=False)
            assert dx is None
            assert_close(candidate.to_host(dW), want[1], np.sqrt(dy.size / f) * 4, f"{algorithm} dW without dx")
    assert "im2col" in ran


@pytest.mark.parametrize("n,d,m", DENSE_SHAPES)
def test_dense_relu(candidate, reference, rng, n, d, m):
    if small_only(candidate) and n * d * m > 20000:
        pytest.skip("large GEMM shape: real GPU only (the simulator is too slow)")
    x, W, b, dy = randn(rng, n, d), randn(rng, d, m), randn(rng, m), randn(rng, n, m)
    x, dy = noncontiguous(x), noncontiguous(dy)
    want_y = reference.dense_relu_forward(x, W, b)
    y, _ = run(candidate, "dense_relu_forward", x, W, b)
    assert_close(candidate.to_host(y), want_y, np.sqrt(d), "y")
    want = reference.dense_relu_backward(dy, x, W, want_y)
    grads, _ = run(candidate, "dense_relu_backward", dy, x, W, want_y)
    for got, wnt, what, length in zip(to_numpy(candidate, grads), want, ("dx", "dW", "db"), (m, n, n)):
        assert got.shape == wnt.shape and got.dtype == np.float32, what
        assert_close(got, wnt, np.sqrt(length), what)
    (dx, dW, db), _ = run(candidate, "dense_relu_backward", dy, x, W, want_y, need_dx=False)
    assert dx is None
    assert_close(candidate.to_host(dW), want[1], np.sqrt(n), "dW without dx")


def test_reference_is_the_composition(reference, rng):
    """The specification itself, spelled out once: pool(relu(conv)) and its chain rule."""
    x, W, b = randn(rng, 2, 3, 9, 9), randn(rng, 4, 3, 3, 3), randn(rng, 4)
    y, cache = reference.conv2d_relu_pool_forward(x, W, b, 1, 1)
    z = np.maximum(reference.conv2d_forward(x, W, b, 1, 1)[0], 0)  # (2, 4, 9, 9)
    np.testing.assert_array_equal(y, z[:, :, :8, :8].reshape(2, 4, 4, 2, 4, 2).max(axis=(3, 5)))
    dy = randn(rng, *y.shape)
    dz = np.zeros_like(z)
    for n, f, i, j in np.ndindex(*y.shape):  # each gradient to its window's first maximum, if positive
        window = z[n, f, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
        a, bb = np.unravel_index(window.argmax(), (2, 2))
        dz[n, f, 2 * i + a, 2 * j + bb] = dy[n, f, i, j] * (window.max() > 0)
    want = reference.conv2d_backward(dz, reference.conv2d_forward(x, W, b, 1, 1)[1])
    for got, wnt in zip(reference.conv2d_relu_pool_backward(dy, cache), want):
        np.testing.assert_allclose(got, wnt, rtol=1e-5, atol=1e-5)
