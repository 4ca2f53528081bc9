"""The cython backend's own checks: the extension really is compiled, a missing one
fails loudly with the command that builds it, and the paths the generic agreement suite
does not reach: every convolution algorithm (forced) on odd shapes, strided and padded, in
float32 and float64; the OpenMP split of the dense GEMMs on sizes that split unevenly; scratch
that does not grow with the batch."""
import importlib
import importlib.machinery
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fastnn.errors import ShapeError

from ..conftest import IN_CI, load_or_skip
from .agree import forced_conv_algorithm, noncontiguous

EXTENSION_MODULES = ("_activation", "_arrays", "_augment", "_conv", "_dense", "_loss", "_optim", "_pool",
                     "_winograd")
CONV_ALGORITHMS = ("im2col", "winograd", "winograd4")  # the cython backend's conv.CONV_ALGORITHMS


@pytest.fixture
def K():
    return load_or_skip("cython")


@pytest.fixture
def reference():
    from fastnn import backends
    return backends.load("numpy")


@pytest.fixture
def two_threads():
    """The thread policy of a compiled backend (fastnn.threads): BLAS on one thread, OpenMP on
    two, so the kernels' own parallel splits run (their chunks of work are uneven below)."""
    with threadpool_limits(1, user_api="blas"), threadpool_limits(2, user_api="openmp"):
        yield


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


# (N, C, H, W, F, K, stride, pad): every case runs through every algorithm of the cython conv
CONV_CASES = [
    (2, 1, 11, 9, 4, 3, 2, 1),     # one channel, stride 2, padding
    (3, 1, 8, 8, 5, 5, 1, 2),      # one channel, padding as wide as the kernel allows
    (2, 3, 7, 6, 4, 2, 3, 1),      # stride larger than the kernel
    (1, 2, 5, 5, 3, 5, 1, 0),      # batch 1, one output pixel
    (5, 16, 9, 11, 7, 3, 2, 2),    # odd sizes, stride 2 with pad 2; 5 images on 2 threads
    (3, 32, 10, 10, 6, 3, 1, 2),   # deep-cnn's pad-2 layer, smaller; 3 images on 2 threads
    (1, 64, 6, 7, 8, 3, 1, 1),     # 64 channels, batch 1
    (4, 8, 6, 5, 3, 1, 1, 0),      # 1x1 kernel
]


def _tolerance(dtype, length):
    """float64: tight; float32: tests/backends/agree.py's, atol widened by sqrt(sum length)."""
    if dtype == np.float64:
        return dict(rtol=1e-10, atol=1e-10)
    return dict(rtol=2e-4, atol=2e-5 * np.sqrt(length))


def _applies(algorithm, case):
    """Where each algorithm applies (Winograd: 3x3, stride 1, pad <= 2; the others everywhere)."""
    _, _, _, _, _, k, s, p = case
    return k == 3 and s == 1 and p <= 2 if algorithm.startswith("winograd") else True


ALGORITHM_CASES = [(a, case) for a in CONV_ALGORITHMS for case in CONV_CASES if _applies(a, case)]


@pytest.mark.parametrize("algorithm,case", ALGORITHM_CASES)
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_algorithms(K, reference, rng, two_threads, algorithm, case, layout, dtype):
    n, c, h, w, f, k, s, p = case
    x, W, b = randn(rng, n, c, h, w, dtype=dtype), randn(rng, f, c, k, k, dtype=dtype), randn(rng, f, dtype=dtype)
    want_y, want_cache = reference.conv2d_forward(x, W, b, s, p)
    dy = randn(rng, *want_y.shape, dtype=dtype)
    want = reference.conv2d_backward(dy, want_cache)
    if layout == "strided":
        x, W, dy = noncontiguous(x), noncontiguous(W), noncontiguous(dy)
    inputs = [a.copy() for a in (x, W, b, dy)]
    with forced_conv_algorithm(algorithm):
        assert K.conv2d_algorithm(x.shape, W.shape, s, p) == algorithm
        y, cache = K.conv2d_forward(x, W, b, s, p)
    assert y.dtype == dtype and cache.algorithm == algorithm and cache.x.shape == x.shape
    np.testing.assert_allclose(y, want_y, **_tolerance(dtype, c * k * k), err_msg="y")
    got = K.conv2d_backward(dy, cache)
    lengths = {"dx": f * k * k, "dW": dy.size / f, "db": dy.size / f}
    for g, wnt, name in zip(got, want, ("dx", "dW", "db")):
        assert g.shape == wnt.shape and g.dtype == dtype, name
        np.testing.assert_allclose(g, wnt, **_tolerance(dtype, lengths[name]), err_msg=name)
    dx, dW, db = K.conv2d_backward(dy, cache, need_dx=False)
    assert dx is None
    if algorithm == "im2col":  # the same loops in the same order: bit for bit
        np.testing.assert_array_equal(dW, got[1])
        np.testing.assert_array_equal(db, got[2])
    np.testing.assert_allclose(dW, want[1], **_tolerance(dtype, lengths["dW"]), err_msg="dW without dx")
    for before, after in zip(inputs, (x, W, b, dy)):
        np.testing.assert_array_equal(after, before, err_msg="a kernel wrote into its input")


def test_forced_algorithm_that_does_not_apply_falls_back(K):
    from fastnn.backends.cython import conv
    automatic = K.conv2d_algorithm((8, 4, 9, 9), (6, 4, 3, 3), 2, 1)
    with forced_conv_algorithm("winograd"):  # Winograd F(2x2, 3x3) needs stride 1
        assert K.conv2d_algorithm((8, 4, 9, 9), (6, 4, 3, 3), 2, 1) == automatic
    for name in conv.CONV_ALGORITHMS:
        with forced_conv_algorithm(name):
            assert K.conv2d_algorithm((64, 32, 26, 26), (64, 32, 3, 3), 1, 0) == name


def test_algorithms(K):
    assert K.CONV_ALGORITHMS == CONV_ALGORITHMS


@pytest.mark.parametrize("shape", [((8, 4, 9, 9), (6, 4, 3, 3), 2, 1),
                                   ((64, 32, 26, 26), (64, 32, 3, 3), 1, 0),
                                   ((100, 1, 28, 28), (30, 1, 5, 5), 1, 0)])
def test_forcing_an_algorithm_this_backend_lacks(K, rng, shape):
    # FASTNN_CONV_ALGO=direct is valid (numba has it), and the cython backend runs its own choice
    from fastnn import config
    x_shape, w_shape, stride, pad = shape
    assert "direct" in config.CONV_ALGORITHMS and "direct" not in K.CONV_ALGORITHMS
    automatic = K.conv2d_algorithm(x_shape, w_shape, stride, pad)
    with forced_conv_algorithm("direct"):
        assert K.conv2d_algorithm(x_shape, w_shape, stride, pad) == automatic
        x, W, b = randn(rng, 2, *x_shape[1:]), randn(rng, *w_shape), randn(rng, w_shape[0])
        y, cache = K.conv2d_forward(x, W, b, stride, pad)
        assert cache.algorithm == automatic
        y, cache = K.conv2d_relu_pool_forward(x, W, b, stride, pad)
        assert cache.algorithm == automatic


def test_openmp_flag(K):
    # every module says whether it was compiled with OpenMP (False: the serial build), all alike,
    # and the backend says it too; test_cython_serial.py tests the serial build
    flags = {name: importlib.import_module(f"fastnn_ext.{name}").OPENMP for name in EXTENSION_MODULES}
    assert set(flags.values()) == {K.OPENMP} and isinstance(K.OPENMP, bool), flags


def test_conv_is_deterministic(K, rng, two_threads):
    # the weight gradient is summed per thread and the partial sums added in a fixed order
    x, W, b = randn(rng, 7, 16, 12, 12), randn(rng, 8, 16, 3, 3), randn(rng, 8)
    with forced_conv_algorithm("im2col"):
        y, cache = K.conv2d_forward(x, W, b, 1, 1)
    dy = randn(rng, *y.shape)
    first = K.conv2d_backward(dy, cache)
    for _ in range(3):
        for a, b_ in zip(K.conv2d_backward(dy, cache), first):
            np.testing.assert_array_equal(a, b_)


def test_conv_scratch_does_not_grow_with_the_batch(K, rng, two_threads):
    # the kernels' work arrays hold one image (or one cache-sized unit of work) per thread,
    # never the batch: past a few images per thread, a bigger batch needs no more scratch
    from fastnn.backends.cython import _prep, conv
    W, b = randn(rng, 8, 4, 3, 3), randn(rng, 8)

    def scratch_after(n):
        x = randn(rng, n, 4, 10, 10)
        for name in conv.CONV_ALGORITHMS:
            with forced_conv_algorithm(name):
                y, cache = K.conv2d_forward(x, W, b, 1, 1)
            K.conv2d_backward(np.ones_like(y), cache)
        return {role: a.nbytes for role, a in _prep._work.pool.items()}

    assert scratch_after(512) == scratch_after(64)


# (N, D, M) that split unevenly over 2 threads: one row, 3 rows, odd D and M; big enough that
# the kernels do use both threads (see PARALLEL_MIN in fastnn_ext/_common.pxd)
DENSE_CASES = [(1, 4099, 33), (3, 2001, 17), (7, 999, 37), (2, 17, 1), (5, 0, 3), (0, 6, 4)]


@pytest.mark.parametrize("case", DENSE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_parallel_split(K, reference, rng, two_threads, case, dtype):
    n, d, m = case
    x, W, b = randn(rng, n, d, dtype=dtype), randn(rng, d, m, dtype=dtype), randn(rng, m, dtype=dtype)
    dy = randn(rng, n, m, dtype=dtype)
    y = K.dense_forward(x, W, b)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, reference.dense_forward(x, W, b), **_tolerance(dtype, d))
    for got, want, length in zip(K.dense_backward(dy, x, W), reference.dense_backward(dy, x, W), (m, n, n)):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **_tolerance(dtype, length))


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
