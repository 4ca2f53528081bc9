"""The cython backend's own checks: the extension really is compiled, a missing one
fails loudly with the command that builds it, and the paths the generic agreement suite
does not reach (direct convolution with stride/padding, float64, GEMM vs direct)."""
import importlib
import importlib.machinery
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastnn.errors import ShapeError

from ..conftest import IN_CI, load_or_skip
from .agree import assert_close

EXTENSION_MODULES = ("_activation", "_arrays", "_conv", "_dense", "_loss", "_optim", "_pool")


@pytest.fixture
def K():
    return load_or_skip("cython")


@pytest.fixture
def reference():
    from fastnn import backends
    return backends.load("numpy")


@pytest.mark.parametrize("name", EXTENSION_MODULES)
def test_extension_modules_are_compiled(K, name):
    module = importlib.import_module(f"fastnn_ext.{name}")
    assert isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader), module.__loader__
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), module.__file__


BLOCK_EXTENSION = textwrap.dedent("""
    import sys
    class NoExtension:  # behaves as if fastnn_ext had never been compiled
        def find_spec(self, name, path=None, target=None):
            if name.startswith("fastnn_ext."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, NoExtension())
""")


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", BLOCK_EXTENSION + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, cwd=os.path.dirname(os.path.dirname(
                              os.path.dirname(os.path.abspath(__file__)))))


def test_missing_extension_says_how_to_build_it():
    result = _run("""
        from fastnn import backends
        from fastnn.errors import BackendUnavailableError
        try:
            backends.use("cython")
        except BackendUnavailableError as e:
            assert isinstance(e.__cause__, ImportError), repr(e.__cause__)
            print(e)
        else:
            raise SystemExit("backends.use('cython') loaded without the extension")
        reason = backends.available()["cython"]
        assert reason is not None and "fastnn_ext" in reason, reason
    """)
    assert result.returncode == 0, result.stdout + result.stderr
    message = result.stdout
    assert "fastnn_ext" in message
    assert "pip install -e ." in message and "python setup.py build_ext --inplace" in message


def test_missing_extension_via_environment_variable():
    result = _run("""
        from fastnn import backends
        from fastnn.errors import BackendUnavailableError
        try:
            backends.get()
        except BackendUnavailableError as e:
            print(e)
        else:
            raise SystemExit("FASTNN_BACKEND=cython loaded without the extension")
    """, FASTNN_BACKEND="cython")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pip install -e ." in result.stdout


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# (N, C, H, W, F, K, stride, pad): every case runs through every path of the cython conv
CONV_CASES = [
    (2, 1, 11, 9, 4, 3, 2, 1),   # one channel, stride 2, padding
    (3, 1, 8, 8, 5, 5, 1, 2),    # one channel, padding as wide as the kernel allows
    (2, 3, 7, 6, 4, 2, 3, 1),    # stride larger than the kernel
    (1, 2, 5, 5, 3, 5, 1, 0),    # one output pixel
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("path", ["direct", "images"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_paths(K, reference, rng, monkeypatch, case, path, dtype):
    from fastnn.backends.cython import conv
    n, c, h, w, f, k, s, p = case
    monkeypatch.setattr(conv, "DIRECT_MAX_CHANNELS", c if path == "direct" else 0)
    x, W, b = randn(rng, n, c, h, w, dtype=dtype), randn(rng, f, c, k, k, dtype=dtype), randn(rng, f, dtype=dtype)
    y, cache = K.conv2d_forward(x, W, b, s, p)
    want_y, want_cache = reference.conv2d_forward(x, W, b, s, p)
    assert y.dtype == dtype and cache[0] == path
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-4, atol=1e-4)
    np.testing.assert_allclose(y, want_y, **tol)
    dy = randn(rng, *want_y.shape, dtype=dtype)
    for got, want in zip(K.conv2d_backward(dy, cache), reference.conv2d_backward(dy, want_cache)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)


def test_float64_everywhere(K, reference, rng):
    x, W, b = randn(rng, 5, 7, dtype=np.float64), randn(rng, 7, 3, dtype=np.float64), randn(rng, 3, dtype=np.float64)
    np.testing.assert_allclose(K.dense_forward(x, W, b), reference.dense_forward(x, W, b), rtol=1e-12)
    dy = randn(rng, 5, 3, dtype=np.float64)
    for got, want in zip(K.dense_backward(dy, x, W), reference.dense_backward(dy, x, W)):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    img = randn(rng, 2, 3, 6, 6, dtype=np.float64)
    y, cache = K.maxpool2d_forward(img, 2, 2, 0)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, reference.maxpool2d_forward(img, 2, 2, 0)[0])


def test_gather_negative_and_bad_indices(K, rng):
    x = randn(rng, 6, 2, 3)
    np.testing.assert_array_equal(K.gather(x, np.array([-1, 0, -6])), x[[-1, 0, -6]])
    with pytest.raises(IndexError):
        K.gather(x, np.array([0, 6]))


def test_bad_label_is_an_error(K, rng):
    with pytest.raises(IndexError):
        K.softmax_cross_entropy(randn(rng, 3, 4), np.array([0, 4, 1]))


def test_in_place_update_refuses_a_copy(K, rng):
    # an update into a temporary contiguous copy would be lost silently: refuse it instead
    param = randn(rng, 4, 6)[:, ::2]
    with pytest.raises(ShapeError, match="C-contiguous"):
        K.sgd_update(param, np.ones_like(param), 0.1)


def test_extension_loads_in_ci():
    """Under CI the extension must be built: a skipped cython backend would hide a broken build."""
    if not IN_CI:
        pytest.skip("only enforced under CI=true")
    for name in EXTENSION_MODULES:
        importlib.import_module(f"fastnn_ext.{name}")
