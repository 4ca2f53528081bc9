"""NaN and infinities in the cython backend go exactly where the numpy reference sends them.

tests/backends/test_nonfinite.py holds every backend to the contract on sprinkled inputs; this
file goes further for the cython kernels, whose ReLU once turned NaN into 0 and whose max-pool
skipped a NaN that was not first in its window: every window pattern of a NaN, the fast 2x2 path
and the general one (padding that comes first in an all -inf window), both float dtypes, the
parallel path of the element-wise kernels, and the fused kernels (conv + ReLU (+ 2x2 max-pool),
dense + ReLU) of every convolution algorithm against their specification, the composition
(fastnn/backends/composed.py):

* im2col against the reference's composition: NaN exactly where it has NaN, the same
  infinities, finite values close. The sums run in another order, but which sums are NaN or
  +-inf does not depend on the order.
* Winograd mixes a tile's pixels before it multiplies (a non-finite input spreads over its
  tile), so there: non-finite wherever the reference is, and, bit for bit, the composition of
  the cython backend's own unfused kernels with the same algorithm forced.
* An infinite dy where the ReLU blocks is NaN at the window's winner alone (inf * 0), not over
  the whole 2x2 window.
"""
import numpy as np
import pytest

from fastnn.backends.composed import fused_kernels

from .test_cython_ext import K  # noqa: F401  (the cython backend fixture; reference comes from conftest)
from .agree import forced_conv_algorithm

NAN, INF = np.nan, np.inf

# NaN arithmetic is the point here: numpy's warnings about it say nothing
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

# 2x2 windows, row-major [top left, top right, bottom left, bottom right]
WINDOWS = [
    [1, NAN, 2, 3],          # a NaN that is not first wins its window
    [NAN, 5, 2, 3],
    [1, 2, NAN, 3],
    [1, 2, 3, NAN],
    [1, NAN, NAN, 3],        # the first of two NaNs
    [NAN, NAN, INF, 3],
    [INF, NAN, 1, 2],        # NaN beats +inf
    [-INF, -INF, -INF, -INF],  # all -inf: the first
    [-INF, -INF, -INF, NAN],
    [INF, INF, 1, 2],        # a tie of infinities: the first
    [2, INF, INF, 1],
    [-1, -2, -3, -4],        # all negative: the ReLU blocks
    [-3, -1, -INF, -2],
    [0, 0, 0, 0],
    [-1, NAN, -2, -3],       # NaN among negatives
    [1, 2, 3, 4],            # ordinary windows around them
    [4, 3, 2, 1],
    [5, 1, 5, 1],            # a tie: the first
]


@pytest.fixture
def rng():
    return np.random.default_rng(20261124)


def assert_same(got, want, what):
    """Equal element for element: NaN for NaN, +inf for +inf, the same finite values."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    np.testing.assert_array_equal(got, want, err_msg=what)


def assert_close(got, want, what, rtol=2e-4, atol=1e-3):
    """NaN exactly where ``want`` has NaN, the same infinities, finite values close."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def assert_covers(got, want, what):
    """Non-finite wherever ``want`` is (a Winograd tile may spread it further)."""
    missing = ~np.isfinite(want) & np.isfinite(got)
    assert not missing.any(), f"{what}: finite at {np.argwhere(missing)[:5].tolist()} where the reference is not"


def window_planes(dtype):
    """x (2, len(WINDOWS), 2, 4): every window of WINDOWS once at the left of a plane, and once at
    its right, after an ordinary window."""
    x = np.zeros((2, len(WINDOWS), 2, 4), dtype)
    for q, window in enumerate(WINDOWS):
        x[0, q, :, 0:2] = np.reshape(window, (2, 2))
        x[0, q, :, 2:4] = [[1.5, -1], [0.5, 2.5]]
        x[1, q, :, 0:2] = [[-0.5, 3], [1, 0.25]]
        x[1, q, :, 2:4] = np.reshape(window, (2, 2))
    return x


def sprinkle(rng, a, fraction):
    """A copy of ``a`` with NaN, +inf and -inf at random places."""
    a = a.copy()
    flat = a.reshape(-1)
    where = rng.choice(flat.size, size=max(3, int(flat.size * fraction)), replace=False)
    flat[where] = np.resize([NAN, INF, -INF], where.size)
    return a


# --------------------------------------------------------------------------- ReLU

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [37, 70001])  # one thread, and past PARALLEL_MIN: the prange
def test_relu(K, reference, rng, dtype, size):
    x = sprinkle(rng, rng.standard_normal(size).astype(dtype), 0.1)
    x[:6] = [NAN, INF, -INF, 0, -0.0, -1]
    y = K.relu_forward(x)
    assert_same(y, reference.relu_forward(x), "relu y: NaN stays NaN, -inf becomes 0")
    assert np.isnan(y[0]) and y[1] == INF and y[2] == 0
    # an infinite or NaN dy where y <= 0 (or NaN) is NaN: a 0/1 mask times dy; a finite one is 0
    dy = sprinkle(rng, rng.standard_normal(size).astype(dtype), 0.1)
    dy[:6] = [1, INF, INF, -INF, NAN, 2]
    dx = K.relu_backward(dy, y)
    assert_same(dx, reference.relu_backward(dy, y), "relu dx")
    assert dx[0] == 0 and dx[1] == INF and np.isnan(dx[2:5]).all() and dx[5] == 0


# ------------------------------------------------------------------------ max-pool

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_2x2_every_window(K, reference, dtype):
    x = window_planes(dtype)
    y, cache = K.maxpool2d_forward(x, 2, 2, 0)
    want_y, want_cache = reference.maxpool2d_forward(x, 2, 2, 0)
    assert_same(y, want_y, "maxpool y")
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[1, 0, 0, 1])  # [1, NaN, 2, 3]
    dy = np.arange(1, y.size + 1, dtype=dtype).reshape(y.shape)
    dx = K.maxpool2d_backward(dy, cache)
    assert_same(dx, reference.maxpool2d_backward(dy, want_cache), "maxpool dx: to the first NaN")
    assert dx[0, 0, 0, 1] == dy[0, 0, 0, 0] and dx[0, 0, 0, 0] == 0  # the NaN took the gradient
    # infinite gradients reach their winner and nothing else
    dy[0, :, 0, 0] = INF
    assert_same(K.maxpool2d_backward(dy, cache), reference.maxpool2d_backward(dy, want_cache), "maxpool dx, inf dy")


@pytest.mark.parametrize("size,stride,pad", [(2, 2, 0), (3, 2, 1), (2, 1, 0), (3, 1, 1), (2, 2, 1), (3, 3, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_general(K, reference, rng, size, stride, pad, dtype):
    x = sprinkle(rng, rng.standard_normal((3, 4, 9, 8)).astype(dtype), 0.15)
    x[0, 0] = -INF  # all -inf: where a padding cell comes first, the padding wins (gradient dropped)
    x[0, 1, :3, :3] = [[1, NAN, 2], [3, NAN, 4], [5, 6, NAN]]  # NaNs not first in their windows
    x[1, 2, :2, :] = -INF
    x[1, 2, 0, 5] = NAN
    y, cache = K.maxpool2d_forward(x, size, stride, pad)
    want_y, want_cache = reference.maxpool2d_forward(x, size, stride, pad)
    assert_same(y, want_y, "maxpool y")
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = K.maxpool2d_backward(dy, cache)
    want_dx = reference.maxpool2d_backward(dy, want_cache)
    if stride >= size:
        assert_same(dx, want_dx, "maxpool dx")
    else:  # overlapping windows add their gradients, in the backend's order
        assert_close(dx, want_dx, "maxpool dx", rtol=1e-6, atol=1e-6)


def test_count_correct_first_nan_wins(K, reference):
    logits = np.array([[0, NAN, 5, NAN], [1, 2, 2, 0], [INF, INF, 0, 1], [NAN, 9, 9, 9]], np.float32)
    for labels in ([1, 1, 0, 0], [2, 2, 1, 1]):
        labels = np.array(labels)
        assert K.count_correct(logits, labels) == reference.count_correct(logits, labels)


# -------------------------------------------------------------------- fused: dense

@pytest.mark.parametrize("where", ["x", "W", "b", "dy"])
def test_dense_relu(K, reference, rng, where):
    x, W, b = (rng.standard_normal(s).astype(np.float32) for s in ((9, 40), (40, 33), (33,)))
    dy = rng.standard_normal((9, 33)).astype(np.float32)
    {"x": lambda: x.__setitem__((3, 7), NAN), "W": lambda: W.__setitem__((5, 4), NAN),
     "b": lambda: b.__setitem__(6, NAN), "dy": lambda: dy.__setitem__(slice(None), sprinkle(rng, dy, 0.2))}[where]()
    y = K.dense_relu_forward(x, W, b)
    want_y = reference.dense_relu_forward(x, W, b)
    assert_close(y, want_y, "dense_relu y")
    assert not np.isfinite(want_y).all() or where == "dy"
    for got, want, what in zip(K.dense_relu_backward(dy, x, W, want_y), reference.dense_relu_backward(dy, x, W, want_y),
                               ("dx", "dW", "db")):
        assert_close(got, want, f"dense_relu {what}")


# --------------------------------------------------------------- fused: convolution

ALGORITHMS = ("im2col", "winograd", "winograd4")


def conv_inputs(rng, where, pool):
    """x (3, 4, 10, 9), W (6, 4, 3, 3), b (6,), dy: NaN / inf at ``where``."""
    x = rng.standard_normal((3, 4, 10, 9)).astype(np.float32)
    W = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    if where == "x":
        x[1, 2, 4, 5], x[2, 0, 7, 1], x[0, 3, 0, 0] = NAN, INF, -INF
    elif where == "W":
        W[2, 1, 0, 2] = NAN
    elif where == "b":
        b[1], b[4] = NAN, INF
    dy = rng.standard_normal((3, 6, 5, 4) if pool else (3, 6, 10, 9)).astype(np.float32)
    if where == "dy":  # at units the ReLU passes and at units it blocks
        dy = sprinkle(rng, dy, 0.1)
    return x, W, b, dy


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("where", ["x", "W", "b", "dy"])
@pytest.mark.parametrize("pool", [False, True], ids=["relu", "relu_pool"])
def test_conv2d_relu(K, reference, rng, algorithm, where, pool):
    name = "conv2d_relu_pool" if pool else "conv2d_relu"
    x, W, b, dy = conv_inputs(rng, where, pool)
    want_y, want_cache = getattr(reference, name + "_forward")(x, W, b, 1, 1)
    want = getattr(reference, name + "_backward")(dy, want_cache)
    assert not all(np.isfinite(a).all() for a in (want_y,) + want), "no NaN reached the reference"
    composed = fused_kernels(K)  # the specification, on the cython backend's unfused kernels
    with forced_conv_algorithm(algorithm):
        assert K.conv2d_algorithm(x.shape, W.shape, 1, 1) == algorithm
        y, cache = getattr(K, name + "_forward")(x, W, b, 1, 1)
        spec_y, spec_cache = composed[name + "_forward"](x, W, b, 1, 1)
    assert_same(y, spec_y, f"{algorithm} {name} y against the composition of cython's kernels")
    got = getattr(K, name + "_backward")(dy, cache)
    spec = composed[name + "_backward"](dy, spec_cache)
    for g, s, what in zip(got, spec, ("dx", "dW", "db")):
        assert_close(g, s, f"{algorithm} {name} {what} against the composition of cython's kernels")
    if algorithm == "im2col":  # the reference's own algorithm: the same non-finite places
        assert_close(y, want_y, f"{name} y")
        for g, w, what in zip(got, want, ("dx", "dW", "db")):
            assert_close(g, w, f"{name} {what}")
    else:
        assert_covers(y, want_y, f"{algorithm} {name} y")


def one_by_one(windows, dtype=np.float32):
    """x (1, 1, 2, 2 * len(windows)): the windows side by side, for a 1x1 convolution with weight 1
    and bias 0 (z = x exactly: no neighbour is mixed in, so each window reaches the pool as it is)."""
    x = np.concatenate([np.reshape(w, (2, 2)) for w in windows], axis=1).astype(dtype)
    return x[None, None], np.ones((1, 1, 1, 1), dtype), np.zeros(1, dtype)


@pytest.mark.parametrize("bias", [0.0, NAN, INF, -INF, 1e30])
def test_conv2d_relu_pool_every_window(K, reference, bias):
    # im2col's epilogue on each window of WINDOWS: which position wins and whether it blocks, with
    # dy finite and infinite at every window
    x, W, b = one_by_one(WINDOWS)
    b[:] = bias
    want_y, want_cache = reference.conv2d_relu_pool_forward(x, W, b, 1, 0)
    y, cache = K.conv2d_relu_pool_forward(x, W, b, 1, 0)
    assert_same(y, want_y, "y")
    for dy in (np.arange(1, y.size + 1, dtype=np.float32).reshape(y.shape), np.full(y.shape, INF, np.float32),
               np.full(y.shape, -INF, np.float32), np.full(y.shape, NAN, np.float32)):
        got = K.conv2d_relu_pool_backward(dy, cache)
        want = reference.conv2d_relu_pool_backward(dy, want_cache)
        for g, w, what in zip(got, want, ("dx", "dW", "db")):
            assert_same(g, w, f"{what}, dy {dy.flat[0]}")


def test_infinite_dy_where_the_relu_blocks_is_nan_at_the_winner_alone(K):
    # [[-1, -2], [-3, -4]]: blocked, its winner the first position (relu makes all four 0)
    x, W, b = one_by_one([[-1, -2, -3, -4], [1, NAN, 2, 3]])
    y, cache = K.conv2d_relu_pool_forward(x, W, b, 1, 0)
    dx = K.conv2d_relu_pool_backward(np.full(y.shape, INF, np.float32), cache)[0]
    np.testing.assert_array_equal(np.isnan(dx[0, 0]), [[True, False, False, True], [False, False, False, False]])
    np.testing.assert_array_equal(dx[0, 0][~np.isnan(dx[0, 0])], 0)
