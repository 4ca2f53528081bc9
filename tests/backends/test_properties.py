"""Property tests: on random valid shapes, every compiled backend agrees with the NumPy reference.

Hypothesis draws the shapes (convolution: N, C, H, W, F, K, stride, pad; pooling: N, C, H,
W, size, stride, pad; dense: N, D, M) and the values; each backend that loads here runs the
same kernel on the same host inputs. The shapes stay small and the example counts low so
the file runs in well under a minute on two cores.

The CUDA backend is left out here when it runs in Numba's CUDA simulator (no GPU): the
simulator executes every GPU thread as a Python thread, so even one random conv shape takes
seconds, and test_agreement.py already drives every cuda kernel there on fixed small
shapes. On a machine with a GPU, cuda is checked here like the others.

Backends are loaded inside the tests with ``backends.load`` (not through a fixture):
Hypothesis runs many examples per test call, and function-scoped fixtures are not reset
between them.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnn import backends

from .agree import assert_close, to_numpy
from ..conftest import COMPILED_BACKENDS, IN_CI, SIMULATED_CUDA

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def compiled_backends():
    """(name, kernel table) of every compiled backend that loads here (cuda only on a real GPU)."""
    out = []
    for name in COMPILED_BACKENDS:
        if name == "cuda" and SIMULATED_CUDA:
            continue  # see the module docstring
        if backends.available()[name] is None:
            out.append((name, backends.load(name)))
        elif IN_CI:
            pytest.fail(f"backend {name} must run in CI but cannot load: {backends.available()[name]}")
    if not out:
        pytest.skip("no compiled backend loads here")
    return out


def arrays(data, *shape):
    """float32 standard-normal values of ``shape``, drawn from a Hypothesis-chosen seed."""
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run(K, name, *args, **kwargs):
    """K.name on host inputs moved to K's memory; results back on the host; inputs unchanged."""
    before = [a.copy() for a in args if isinstance(a, np.ndarray)]
    moved = [K.to_device(a) if isinstance(a, np.ndarray) else a for a in args]
    out = getattr(K, name)(*moved, **kwargs)
    for b, m in zip(before, [m for a, m in zip(args, moved) if isinstance(a, np.ndarray)]):
        np.testing.assert_array_equal(K.to_host(m), b, err_msg=f"{name} wrote into an input")
    return out


@st.composite
def conv_shapes(draw):
    k = draw(st.integers(1, 5), label="K")
    stride = draw(st.integers(1, 3), label="stride")
    pad = draw(st.integers(0, k - 1), label="pad")
    h = draw(st.integers(max(1, k - 2 * pad), 12), label="H")
    w = draw(st.integers(max(1, k - 2 * pad), 12), label="W")
    return (draw(st.integers(1, 4), label="N"), draw(st.integers(1, 4), label="C"), h, w,
            draw(st.integers(1, 6), label="F"), k, stride, pad)


@SETTINGS
@given(shape=conv_shapes(), need_dx=st.booleans(), data=st.data())
def test_conv2d_agrees(shape, need_dx, data):
    n, c, h, w, f, k, stride, pad = shape
    ref = backends.load("numpy")
    x, W, b = arrays(data, n, c, h, w), arrays(data, f, c, k, k), arrays(data, f)
    want_y, want_cache = ref.conv2d_forward(x, W, b, stride, pad)
    dy = arrays(data, *want_y.shape)
    want = ref.conv2d_backward(dy, want_cache, need_dx=need_dx)
    for name, K in compiled_backends():
        y, cache = run(K, "conv2d_forward", x, W, b, stride, pad)
        assert_close(K.to_host(y), want_y, np.sqrt(c * k * k), f"{name} y")
        got = to_numpy(K, K.conv2d_backward(K.to_device(dy), cache, need_dx=need_dx))
        if not need_dx:
            assert got[0] is None, name
        for g, wnt, what in zip(got, want, ("dx", "dW", "db")):
            if wnt is not None:
                assert g.shape == wnt.shape and g.dtype == np.float32, f"{name} {what}"
                assert_close(g, wnt, np.sqrt(dy.size / f), f"{name} {what}")


@SETTINGS
@given(shape=conv_shapes(), data=st.data())
def test_im2col_col2im_agree(shape, data):
    n, c, h, w, _, k, stride, pad = shape
    ref = backends.load("numpy")
    x = arrays(data, n, c, h, w)
    want = ref.im2col(x, k, k, stride, pad)
    dcol = arrays(data, *want.shape)
    for name, K in compiled_backends():
        np.testing.assert_array_equal(K.to_host(run(K, "im2col", x, k, k, stride, pad)), want, err_msg=name)
        assert_close(K.to_host(run(K, "col2im", dcol, x.shape, k, k, stride, pad)),
                     ref.col2im(dcol, x.shape, k, k, stride, pad), k, f"{name} col2im")


@st.composite
def pool_shapes(draw):
    size = draw(st.integers(1, 4), label="size")
    stride = draw(st.integers(1, 4), label="stride")
    pad = draw(st.integers(0, size // 2), label="pad")
    h = draw(st.integers(max(1, size - 2 * pad), 13), label="H")
    w = draw(st.integers(max(1, size - 2 * pad), 13), label="W")
    return draw(st.integers(1, 4), label="N"), draw(st.integers(1, 5), label="C"), h, w, size, stride, pad


@SETTINGS
@given(shape=pool_shapes(), kind=st.sampled_from(["maxpool2d", "avgpool2d"]), data=st.data())
def test_pool_agrees(shape, kind, data):
    n, c, h, w, size, stride, pad = shape
    ref = backends.load("numpy")
    x = arrays(data, n, c, h, w)
    want_y, want_cache = getattr(ref, f"{kind}_forward")(x, size, stride, pad)
    dy = arrays(data, *want_y.shape)
    want_dx = getattr(ref, f"{kind}_backward")(dy, want_cache)
    for name, K in compiled_backends():
        y, cache = run(K, f"{kind}_forward", x, size, stride, pad)
        assert_close(K.to_host(y), want_y, 1.0, f"{name} y")
        dx = K.to_host(getattr(K, f"{kind}_backward")(K.to_device(dy), cache))
        assert dx.shape == x.shape and dx.dtype == np.float32, name
        assert_close(dx, want_dx, size, f"{name} dx")


@SETTINGS
@given(n=st.integers(1, 40), d=st.integers(1, 300), m=st.integers(1, 40), data=st.data())
def test_dense_agrees(n, d, m, data):
    ref = backends.load("numpy")
    x, W, b, dy = arrays(data, n, d), arrays(data, d, m), arrays(data, m), arrays(data, n, m)
    want_y, want = ref.dense_forward(x, W, b), ref.dense_backward(dy, x, W)
    for name, K in compiled_backends():
        assert_close(K.to_host(run(K, "dense_forward", x, W, b)), want_y, np.sqrt(d), f"{name} y")
        got = to_numpy(K, run(K, "dense_backward", dy, x, W))
        for g, wnt, what, length in zip(got, want, ("dx", "dW", "db"), (m, n, n)):
            assert g.shape == wnt.shape and g.dtype == np.float32, f"{name} {what}"
            assert_close(g, wnt, np.sqrt(length), f"{name} {what}")
