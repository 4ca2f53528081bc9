"""NaN and infinities go where the reference sends them, on every backend.

A NaN weight must reach the loss, so that training stops: a backend whose ReLU turns NaN into
0, or whose max-pool skips it, would train on garbage with a finite loss.

* Element-wise kernels, pooling, losses and updates match the reference exactly: NaN where it
  has NaN, the same infinities, the same finite values (assert_array_equal treats NaN as equal
  to NaN and tells +inf from -inf).
* Products (dense, convolution) are sums in a BLAS-dependent order, and Winograd mixes each tile's
  pixels before it multiplies: a non-finite input spreads over its whole tile, and inf - inf is
  NaN where the reference may add up an inf. So there every output that is non-finite in the
  reference is non-finite in the candidate, and im2col (the reference's own algorithm) is
  non-finite exactly where the reference is.
"""
import numpy as np
import pytest

from .agree import assert_close, conv_algorithms, forced_conv_algorithm, run, to_numpy
from .test_agreement import randn

SPECIALS = (np.nan, np.inf, -np.inf)


def sprinkle(rng, a, fraction=0.1):
    """A copy of ``a`` with NaN, +inf and -inf at random places (about ``fraction`` of it)."""
    a = a.copy()
    flat = a.reshape(-1)
    where = rng.choice(flat.size, size=max(3, int(flat.size * fraction)), replace=False)
    flat[where] = np.resize(SPECIALS, where.size)
    return a


def assert_same(got, want, what):
    """Equal element for element, NaN for NaN and inf for inf."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    np.testing.assert_array_equal(got, want, err_msg=what)


def assert_nonfinite_covers(got, want, what, exact):
    """Non-finite wherever the reference is (exactly there if ``exact``); finite values close."""
    bad_got, bad_want = ~np.isfinite(got), ~np.isfinite(want)
    assert bad_want.any(), f"{what}: the test's NaN did not reach the reference's output"
    missing = bad_want & ~bad_got
    assert not missing.any(), f"{what}: finite at {np.argwhere(missing)[:5].tolist()} where the reference is not"
    if exact:
        np.testing.assert_array_equal(bad_got, bad_want, err_msg=f"{what}: non-finite elsewhere than the reference")
    both = ~bad_got & ~bad_want
    np.testing.assert_allclose(got[both], want[both], rtol=2e-4, atol=2e-4, err_msg=what)


# ------------------------------------------------------------------- element-wise: exactly

@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activations(candidate, reference, rng, name):
    x = sprinkle(rng, randn(rng, 7, 33))
    y, _ = run(candidate, f"{name}_forward", x)
    want_y = getattr(reference, f"{name}_forward")(x)
    if name == "relu":
        assert_same(candidate.to_host(y), want_y, "relu y")
    else:  # transcendental: same non-finite places, close elsewhere
        assert_nonfinite_covers(candidate.to_host(y), want_y, f"{name} y", exact=True)
    dy = sprinkle(rng, randn(rng, 7, 33), 0.05)  # an infinite dy at a blocked unit: inf * 0 = NaN
    dx, _ = run(candidate, f"{name}_backward", dy, want_y)
    want_dx = getattr(reference, f"{name}_backward")(dy, want_y)
    if name == "relu":
        assert_same(candidate.to_host(dx), want_dx, "relu dx")
    else:
        assert_nonfinite_covers(candidate.to_host(dx), want_dx, f"{name} dx", exact=True)


def test_relu_keeps_nan(candidate):
    """The defect as reported: ReLU turned NaN into 0 on two backends."""
    y = candidate.to_host(candidate.relu_forward(candidate.to_device(
        np.array([np.nan, 1.0, -1.0, np.inf, -np.inf, 0.0], np.float32))))
    assert_same(y, np.array([np.nan, 1.0, 0.0, np.inf, 0.0, 0.0], np.float32), "relu")


@pytest.mark.parametrize("size,stride,pad", [(2, 2, 0), (3, 2, 1), (2, 1, 0)])
def test_maxpool(candidate, reference, rng, size, stride, pad):
    x = sprinkle(rng, randn(rng, 2, 3, 8, 8), 0.08)
    x[0, 0, 0:2, 0:2] = [[1.0, np.nan], [2.0, 3.0]]  # a NaN that is not first in its window wins it
    x[0, 1, 0:2, 0:2] = [[np.nan, np.nan], [np.inf, 3.0]]  # the first of two NaNs
    x[0, 2, 0:2, 0:2] = -np.inf  # an all -inf window
    (y, cache), _ = run(candidate, "maxpool2d_forward", x, size, stride, pad)
    want_y, want_cache = reference.maxpool2d_forward(x, size, stride, pad)
    assert_same(candidate.to_host(y), want_y, "maxpool y")
    dy = randn(rng, *want_y.shape)
    dx = candidate.to_host(candidate.maxpool2d_backward(candidate.to_device(dy), cache))
    want_dx = reference.maxpool2d_backward(dy, want_cache)
    if stride == size:
        assert_same(dx, want_dx, "maxpool dx: the gradient goes to the first NaN")
    else:  # overlapping windows add their gradients, in an order of the backend's
        np.testing.assert_allclose(dx, want_dx, rtol=1e-6, atol=1e-6, err_msg="maxpool dx")


def test_avgpool_and_dropout(candidate, reference, rng):
    x = sprinkle(rng, randn(rng, 2, 3, 6, 6))
    (y, _), _ = run(candidate, "avgpool2d_forward", x, 2, 2, 0)
    assert_nonfinite_covers(candidate.to_host(y), reference.avgpool2d_forward(x, 2, 2, 0)[0], "avgpool", exact=True)
    mask = reference.dropout_mask(x.shape, 0.5, np.random.default_rng(0))
    y, _ = run(candidate, "dropout_forward", x, mask)
    assert_same(candidate.to_host(y), reference.dropout_forward(x, mask), "dropout: NaN * 0 stays NaN")


def test_losses(candidate, reference, rng):
    logits = randn(rng, 5, 10)
    logits[2, 3] = np.nan
    labels = np.array([1, 2, 3, 4, 5])
    (loss, _), _ = run(candidate, "softmax_cross_entropy", logits, labels)
    want, _ = reference.softmax_cross_entropy(logits, labels)
    assert np.isnan(want) and np.isnan(loss), f"a NaN logit gives a NaN loss, got {loss}"
    logits[2, 3] = np.inf
    (loss, _), _ = run(candidate, "softmax_cross_entropy", logits, labels)
    assert not np.isfinite(loss), f"an infinite logit gives a non-finite loss, got {loss}"


@pytest.mark.parametrize("update", ["sgd", "adam"])
def test_updates(candidate, reference, rng, update):
    param, grad = randn(rng, 50), randn(rng, 50)
    grad[[3, 7, 11]] = SPECIALS
    args = {"sgd": lambda p, g: (p, g, 0.1, 0.0),
            "adam": lambda p, g: (p, g, np.zeros_like(p), np.zeros_like(p), 0.01, 0.9, 0.999, 1e-8, 1, 0.0)}[update]
    want = param.copy()
    getattr(reference, f"{update}_update")(*args(want, grad))
    moved = candidate.to_device(param.copy())
    state = [candidate.to_device(a) if isinstance(a, np.ndarray) else a for a in args(param, grad)[1:]]
    getattr(candidate, f"{update}_update")(moved, *state)
    assert_nonfinite_covers(candidate.to_host(moved), want, f"{update} update", exact=True)


# ------------------------------------------------------------------------ products

@pytest.mark.parametrize("fused", [False, True], ids=["dense", "dense_relu"])
def test_dense(candidate, reference, rng, fused):
    x, W, b, dy = randn(rng, 6, 20), randn(rng, 20, 9), randn(rng, 9), randn(rng, 6, 9)
    x[1, 4], W[7, 2], b[5] = np.nan, np.nan, np.nan
    name = "dense_relu" if fused else "dense"
    want_y = getattr(reference, f"{name}_forward")(x, W, b)
    y, _ = run(candidate, f"{name}_forward", x, W, b)
    assert_nonfinite_covers(candidate.to_host(y), want_y, f"{name} y", exact=True)
    args = (dy, x, W, want_y) if fused else (dy, x, W)
    grads, _ = run(candidate, f"{name}_backward", *args)
    for got, want, what in zip(to_numpy(candidate, grads), getattr(reference, f"{name}_backward")(*args),
                               ("dx", "dW", "db")):
        if np.isfinite(want).all():
            assert_close(got, want, 10, f"{name} {what}")
        else:
            assert_nonfinite_covers(got, want, f"{name} {what}", exact=True)


@pytest.mark.parametrize("kernel", ["conv2d", "conv2d_relu", "conv2d_relu_pool"])
@pytest.mark.parametrize("where", ["x", "W", "b"])
def test_conv(candidate, reference, rng, kernel, where):
    x, W, b = randn(rng, 2, 3, 10, 10), randn(rng, 4, 3, 3, 3), randn(rng, 4)
    {"x": lambda: x.__setitem__((1, 2, 5, 6), np.nan), "W": lambda: W.__setitem__((2, 1, 0, 2), np.nan),
     "b": lambda: b.__setitem__(3, np.nan)}[where]()
    want_y, want_cache = getattr(reference, f"{kernel}_forward")(x, W, b, 1, 1)
    dy = randn(rng, *want_y.shape)
    if kernel != "conv2d":  # an infinite dy where the ReLU blocks: inf * 0 = NaN at the winner alone
        dy[0, 1, 2, 3], dy[1, 0, 0, 0] = np.inf, -np.inf
    want = getattr(reference, f"{kernel}_backward")(dy, want_cache)
    ran = []
    for algorithm in conv_algorithms(candidate):
        with forced_conv_algorithm(algorithm):
            if candidate.conv2d_algorithm(x.shape, W.shape, 1, 1) != algorithm:
                continue
            ran.append(algorithm)
            exact = algorithm == "im2col"
            (y, cache), _ = run(candidate, f"{kernel}_forward", x, W, b, 1, 1)
            y = candidate.to_host(y)
            assert_nonfinite_covers(y, want_y, f"{algorithm} {kernel} y", exact)
            if not np.array_equal(np.isfinite(y), np.isfinite(want_y)):
                continue  # spread over a tile: a ReLU after it blocks other units than the reference's
            got = to_numpy(candidate, getattr(candidate, f"{kernel}_backward")(candidate.to_device(dy), cache))
            for g, wnt, what in zip(got, want, ("dx", "dW", "db")):
                if np.isfinite(wnt).all():
                    assert np.isfinite(g).all(), f"{algorithm} {kernel} {what}: non-finite, the reference is not"
                    assert_close(g, wnt, 30, f"{algorithm} {kernel} {what}")
                else:
                    assert_nonfinite_covers(g, wnt, f"{algorithm} {kernel} {what}", exact)
    assert "im2col" in ran
