"""Winograd convolution F(2x2, 3x3) and F(4x4, 3x3): the plain NumPy version against the im2col
reference, and its compiled twins (Numba, Cython) against both.

* fastnn/backends/numpy/winograd.py in float64 agrees with the reference within float64
  rounding: the algorithm is exact, only rounding differs. In float32, within float32 rounding.
* fastnn/backends/numba/conv/winograd.py and fastnn/backends/cython/winograd.py (float32, the
  thread count passed in) agree with the plain version and with the reference: forward, dx, dW,
  db, on batch 1, ragged tiles (odd output sizes), pads 0, 1 and 2, 1 to 64 channels, odd filter
  counts, non-contiguous inputs made contiguous by the caller, and hypothesis's random shapes.
  No kernel may write into its inputs.
* ``test_float32_error_on_deep_cnn`` prints the worst relative error of float32 Winograd against
  a float64 reference on deep-cnn's layers (He weights, activations of real MNIST digits); run
  it with ``-s`` to see the figures.

Every tolerance here is a rounding bound (``winograd_bounds``, ``reference_bounds``) worked out
per element from the arrays themselves: no figure measured on one machine (an AVX-512 and an
AVX2 host sum in different orders, and both must pass).
"""
import contextlib
import importlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnn.backends.numpy import winograd as plain

from ..conftest import IN_CI, _ran, load_or_skip
from .agree import noncontiguous

TWINS = {"numba": "fastnn.backends.numba.conv.winograd",
         "cython": "fastnn.backends.cython.winograd"}

# (N, C, H, W, F, pad)
CASES = [
    (1, 1, 3, 3, 1, 1),       # a 3x3 input with pad 1: one ragged tile of F(2x2), 3x3 outputs
    (1, 1, 3, 3, 2, 0),       # a single output pixel
    (2, 3, 7, 9, 5, 0),       # odd sizes: ragged tiles in both directions
    (2, 3, 7, 9, 5, 1),
    (2, 3, 7, 9, 5, 2),
    (1, 4, 5, 5, 3, 2),       # batch 1, pad 2
    (3, 2, 8, 8, 7, 1),
    (1, 32, 10, 6, 7, 2),     # wide and short
    (3, 16, 14, 14, 33, 1),   # deep-cnn-like, F odd
    (2, 64, 8, 8, 31, 1),     # 64 channels
    (2, 32, 13, 13, 9, 0),    # pytorch-net-like, odd output size
]
MS = [2, 4]


def randn(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)



def case_arrays(rng, case, dtype=np.float32):
    N, C, H, W, F, pad = case
    OH, OW = H + 2 * pad - 2, W + 2 * pad - 2
    x, Wt = randn(rng, (N, C, H, W), dtype), randn(rng, (F, C, 3, 3), dtype)
    b = randn(rng, F, dtype)
    dy = randn(rng, (N, F, OH, OW), dtype)
    return x, Wt, b, dy, pad


def reference_conv(reference, x, W, b, dy, pad):
    """The im2col reference in float64: (y, dx, dW, db)."""
    f64 = [a.astype(np.float64) for a in (x, W, b, dy)]
    y, cache = reference.conv2d_forward(*f64[:3], 1, pad)
    dx, dW, db = reference.conv2d_backward(f64[3], cache)
    return y, dx, dW, db


# ------------------------------------------------------------- how far rounding can go
#
# Each result is a sum of products of inputs and transform constants, and in float32 every
# product and partial sum is rounded, with a relative error of at most u = 2^-24. The same
# algorithm run in float64 on |x|, |W|, |b|, |dy| with |B^T|, |G|, |A^T| gives ``mag``, which
# bounds every partial sum the kernel rounds, in whatever order it adds (BLAS blocking, SIMD
# width, FMA): it is the terms' magnitude times the transform's growth (F(4x4, 3x3)'s constants
# up to 8 and 5 make it far larger than F(2x2, 3x3)'s). With at most n roundings on the way to
# an output, the error is at most n * u * mag (Higham's gamma_n), and with independent roundings
# at most LAMBDA * sqrt(n) * u * mag but with probability about 2 exp(-LAMBDA^2 / 2) per term
# (Higham & Mary, SIAM J. Sci. Comput. 2019): the eps * sqrt(K) bound of a K-term dot product,
# times the transform's growth. Nothing in it was measured on a machine.

# 2 exp(-32) = 3e-14 per term: under 1e-4 over the ~1e9 terms this file sums. Where n <= 64 the
# bound is even above the worst case n * u * mag.
LAMBDA = 8.0
UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0 ** -24, np.dtype(np.float64): 2.0 ** -53}
PARTS = 8  # the most per-thread dW parts added at the end (test_twin_thread_counts' 8 threads)


@contextlib.contextmanager
def absolute_transforms():
    """plain's B^T, G, A^T replaced by their absolute values inside the block."""
    saved = dict(plain.MATRICES)
    plain.MATRICES.update({m: tuple(np.abs(a) for a in mats) for m, mats in saved.items()})
    try:
        yield
    finally:
        plain.MATRICES.update(saved)


def winograd_bounds(x, W, b, dy, pad, m, dtype, rounded_inputs=False):
    """Per-element bounds on |Winograd in dtype - exact| for (y, dx, dW, db).

    Roundings on the way to an output (n): a 1-D transform pass adds at most a = m + 2 terms,
    each times a constant (a roundings), and a 2-D transform is two passes. y: the input and
    filter transforms (2a each), the product (1), the sum over C channels (C), the output
    transform (2a), the bias (1). dx is the same forward pass over dy (F channels). dW: A dY A^T
    and B^T d B (2a each), the product, the sum over the T tiles and PARTS per-thread parts,
    G^T dU G (2a). db: N*OH*OW additions. ``rounded_inputs``: x, W and dy were themselves rounded
    from float64 (two more roundings per product)."""
    N, C = x.shape[:2]
    F, OH, OW = dy.shape[1:]
    a = m + 2
    T = N * plain.tiles_for(OH, m) * plain.tiles_for(OW, m)
    extra = 2 if rounded_inputs else 0
    n = (C + 6 * a + 2 + extra, F + 6 * a + 2 + extra, T + PARTS + 6 * a + 1 + extra, N * OH * OW + extra)
    ax, aW, ab, ady = (np.abs(v.astype(np.float64)) for v in (x, W, b, dy))
    with absolute_transforms():
        mag = (plain.conv2d_forward(ax, aW, ab, pad, m),) + plain.conv2d_backward(ady, ax, aW, pad, m)
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    return tuple(LAMBDA * np.sqrt(k) * u * g for k, g in zip(n, mag))


def reference_bounds(reference, x, W, b, dy, pad):
    """The same bound for the float64 im2col reference (9C-term sums for y, F terms then up to 9
    overlapping columns for dx, N*OH*OW for dW and db): 2^29 times smaller than float32's, but
    it is there."""
    N, C = x.shape[:2]
    F, OH, OW = dy.shape[1:]
    n = (9 * C + 1, F + 9, N * OH * OW, N * OH * OW)
    mag = reference_conv(reference, *(np.abs(v) for v in (x, W, b, dy)), pad)
    return tuple(LAMBDA * np.sqrt(k) * UNIT_ROUNDOFF[np.dtype(np.float64)] * g for k, g in zip(n, mag))


def assert_within(got, want, tolerances, what):
    """Every element of got within its tolerance of want (NaN never is)."""
    for name, g, w, tol in zip(("y", "dx", "dW", "db"), got, want, tolerances):
        assert g.shape == w.shape, f"{what} {name}: shape {g.shape}, want {w.shape}"
        err = np.abs(g.astype(np.float64) - w.astype(np.float64))
        bad = ~(err <= tol)
        if bad.any():
            i = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(tol, 1e-300), 0)), err.shape)
            raise AssertionError(f"{what} {name}: {bad.sum()} of {bad.size} elements beyond the rounding "
                                 f"bound; at {i}: got {g[i]!r}, want {w[i]!r}, error {err[i]:.3e}, "
                                 f"bound {tol[i]:.3e}")


def assert_close_to_reference(got, reference, x, W, b, dy, pad, m, what, rounded_inputs=False):
    """got (Winograd in got's dtype) against the float64 reference: both sides' rounding bounds."""
    want = reference_conv(reference, x, W, b, dy, pad)
    ours = winograd_bounds(x, W, b, dy, pad, m, got[0].dtype, rounded_inputs)
    theirs = reference_bounds(reference, x, W, b, dy, pad)
    assert_within(got, want, [o + t for o, t in zip(ours, theirs)], what)


# ----------------------------------------------------------------- the plain NumPy version

@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("case", CASES)
def test_plain_float64_is_exact(reference, rng, case, m):
    x, W, b, dy, pad = case_arrays(rng, case, np.float64)
    y = plain.conv2d_forward(x, W, b, pad, m)
    dx, dW, db = plain.conv2d_backward(dy, x, W, pad, m)
    assert all(a.dtype == np.float64 for a in (y, dx, dW, db))
    assert_close_to_reference((y, dx, dW, db), reference, x, W, b, dy, pad, m, f"plain float64 F({m}x{m})")


@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("case", CASES)
def test_plain_float32(reference, rng, case, m):
    x, W, b, dy, pad = case_arrays(rng, case)
    y = plain.conv2d_forward(x, W, b, pad, m)
    dx, dW, db = plain.conv2d_backward(dy, x, W, pad, m)
    assert all(a.dtype == np.float32 for a in (y, dx, dW, db))
    assert_close_to_reference((y, dx, dW, db), reference, x, W, b, dy, pad, m, f"plain F({m}x{m})")


def test_plain_without_dx(rng):
    x, W, b, dy, pad = case_arrays(rng, CASES[3])
    dx, dW, db = plain.conv2d_backward(dy, x, W, pad, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dW, plain.conv2d_backward(dy, x, W, pad)[1])


def test_plain_rejects_other_tile_sizes(rng):
    x, W, b, dy, pad = case_arrays(rng, CASES[0])
    with pytest.raises(ValueError, match="m = 2 and m = 4"):
        plain.conv2d_forward(x, W, b, pad, m=3)


# ------------------------------------------------------------------- the compiled twins

@pytest.fixture(params=sorted(TWINS))
def twin(request):
    """The compiled module (numba or cython) with forward(x, W, b, pad, n_threads, m) and
    backward(dy, x, W, pad, need_dx, n_threads, m)."""
    load_or_skip(request.param)
    try:
        module = importlib.import_module(TWINS[request.param])
    except ImportError as e:  # the cython extension was built before _winograd.pyx existed
        message = f"{TWINS[request.param]} cannot be imported ({e}): rebuild with " \
                  "`python setup.py build_ext --inplace`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    _ran[request.param] += 1  # counted in the summary's kernel tests per backend
    return module


def run_twin(twin, x, W, b, dy, pad, m, n_threads=2, need_dx=True):
    """(y, dx, dW, db) from the twin, checking that no input was written into."""
    before = [a.copy() for a in (x, W, b, dy)]
    y = twin.forward(x, W, b, pad, n_threads, m)
    dx, dW, db = twin.backward(dy, x, W, pad, need_dx, n_threads, m)
    for name, a, a0 in zip(("x", "W", "b", "dy"), (x, W, b, dy), before):
        np.testing.assert_array_equal(a, a0, err_msg=f"the kernel wrote into {name}")
    for a in (y, dW, db) + ((dx,) if need_dx else ()):
        assert a.dtype == np.float32
    return y, dx, dW, db


@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("pad", [0, 1, 2])
def test_twin_reads_no_further_than_its_zero_row(twin, reference, rng, monkeypatch, pad, m):
    """Regression: with pad 2, dy is wider than x, and the dx pass once got a zero row only as
    wide as x, so a ragged last tile read past it (garbage in dx, seen once in CI). Here NaN
    lies right after the zero row: any read past it shows up as NaN in the results."""
    make = twin.zero_row

    def zero_row_then_nan(*arrays):
        zero = make(*arrays)
        tail = np.full(zero.size + 64, np.nan, zero.dtype)
        tail[:zero.size] = 0.0
        return tail[:zero.size]
    monkeypatch.setattr(twin, "zero_row", zero_row_then_nan)
    x, W, b, dy, pad = case_arrays(rng, (3, 32, 10, 10, 6, pad))  # 10 = 4*2 + 2: ragged for m 2 and 4
    got = run_twin(twin, x, W, b, dy, pad, m)
    for a, what in zip(got, ("y", "dx", "dW", "db")):
        assert np.isfinite(a).all(), f"{what} read past the zero row"
    assert_close_to_reference(got, reference, x, W, b, dy, pad, m, f"pad {pad} F({m}x{m})")


@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("case", CASES)
def test_twin_matches_plain_and_reference(twin, reference, rng, case, m):
    x, W, b, dy, pad = case_arrays(rng, case)
    got = run_twin(twin, x, W, b, dy, pad, m)
    want_plain = (plain.conv2d_forward(x, W, b, pad, m),) + plain.conv2d_backward(dy, x, W, pad, m)
    both = [2 * t for t in winograd_bounds(x, W, b, dy, pad, m, np.float32)]  # each side rounds
    assert_within(got, want_plain, both, f"{twin.__name__} vs plain F({m}x{m})")
    assert_close_to_reference(got, reference, x, W, b, dy, pad, m, f"{twin.__name__} vs reference F({m}x{m})")


def test_twin_rejects_other_tile_sizes(twin, rng):
    x, W, b, dy, pad = case_arrays(rng, CASES[0])
    with pytest.raises(ValueError, match="m = 2 and m = 4"):
        twin.forward(x, W, b, pad, 1, 3)
    with pytest.raises(ValueError, match="m = 2 and m = 4"):
        twin.backward(dy, x, W, pad, True, 1, 3)


@pytest.mark.parametrize("n_threads", [1, 3, 8])
def test_twin_thread_counts(twin, reference, rng, n_threads):
    # more threads than tile rows, and a count that does not divide the work
    x, W, b, dy, pad = case_arrays(rng, (3, 5, 9, 7, 6, 1))
    got = run_twin(twin, x, W, b, dy, pad, 2, n_threads)
    assert_close_to_reference(got, reference, x, W, b, dy, pad, 2, f"{n_threads} threads")


def test_twin_without_dx(twin, rng):
    x, W, b, dy, pad = case_arrays(rng, CASES[4])
    _, dx, dW, db = run_twin(twin, x, W, b, dy, pad, 2, need_dx=False)
    assert dx is None
    _, _, dW_all, db_all = run_twin(twin, x, W, b, dy, pad, 2)
    np.testing.assert_array_equal(dW, dW_all)
    np.testing.assert_array_equal(db, db_all)


def test_twin_noncontiguous_inputs(twin, reference, rng):
    # the kernels take C-contiguous arrays; the caller makes strided ones contiguous
    x, W, b, dy, pad = case_arrays(rng, (2, 6, 9, 9, 5, 1))
    x_view, dy_view = noncontiguous(x), noncontiguous(dy)
    got = run_twin(twin, np.ascontiguousarray(x_view), W, b, np.ascontiguousarray(dy_view), pad, 2)
    assert_close_to_reference(got, reference, x, W, b, dy, pad, 2, "non-contiguous")


def test_twin_is_repeatable(twin, rng):
    # scratch buffers are reused between calls: a second call (and one of another shape in
    # between) must give the same bits
    x, W, b, dy, pad = case_arrays(rng, (2, 8, 10, 10, 4, 1))
    first = run_twin(twin, x, W, b, dy, pad, 2)
    run_twin(twin, *case_arrays(rng, (1, 8, 10, 10, 4, 2)), 2)
    for a, a0 in zip(run_twin(twin, x, W, b, dy, pad, 2), first):
        np.testing.assert_array_equal(a, a0)


@pytest.mark.parametrize("m", MS)
def test_cython_float64_is_exact(reference, rng, m):
    # the cython kernels are fused float/double: in float64 they agree with the reference as the
    # plain version does
    load_or_skip("cython")
    twin = importlib.import_module(TWINS["cython"])
    x, W, b, dy, pad = case_arrays(rng, (2, 5, 9, 7, 3, 1), np.float64)
    got = (twin.forward(x, W, b, pad, 2, m),) + twin.backward(dy, x, W, pad, True, 2, m)
    assert all(g.dtype == np.float64 for g in got)
    assert_close_to_reference(got, reference, x, W, b, dy, pad, m, f"cython float64 F({m}x{m})")


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(N=st.integers(1, 3), C=st.integers(1, 9), F=st.integers(1, 9), H=st.integers(3, 12),
       W=st.integers(3, 12), pad=st.integers(0, 2), m=st.sampled_from(MS),
       seed=st.integers(0, 2**16))
def test_twin_random_shapes(twin, reference, N, C, F, H, W, pad, m, seed):
    x, Wt, b, dy, pad = case_arrays(np.random.default_rng(seed), (N, C, H, W, F, pad))
    got = run_twin(twin, x, Wt, b, dy, pad, m)
    assert_close_to_reference(got, reference, x, Wt, b, dy, pad, m, f"F({m}x{m}) on {(N, C, H, W, F, pad)}")


# ---------------------------------------------------------------- float32 error on real activations

DEEP_CNN_CONVS = [(1, 16, 1), (16, 16, 1), (16, 32, 1), (32, 32, 2), (32, 64, 1), (64, 64, 1)]
POOL_AFTER = {1, 3, 5}  # deep-cnn max-pools after its second, fourth and sixth conv


def mnist_digits(mnist_dir, n):
    """The first n test digits of the real MNIST, as floats in [0, 1]."""
    from fastnn.data.idx import read_idx
    return (read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:n].astype(np.float64) / 255.0).reshape(n, 1, 28, 28)


def relative_error(got, want):
    # the largest error, relative to the largest value: zeros of ReLU inputs have no relative error
    return float(np.abs(got - want).max() / np.abs(want).max())


def report(layer, C, F, pad, algorithm, errors):
    print(f"deep-cnn conv{layer + 1} {C:2d}->{F:2d} pad {pad}  {algorithm:8s} float32 relative "
          f"error:  y {errors[0]:.1e}  dx {errors[1]:.1e}  dW {errors[2]:.1e}")


def test_float32_error_on_deep_cnn(twin, reference, rng, mnist_dir):
    """float32 Winograd against float64 im2col on deep-cnn's six convolutions, each fed the
    float64 activations that real MNIST digits produce through the layers before it (He
    weights): every element within the rounding bound of its sums (rounding_bounds), the
    inputs' own rounding to float32 included. The relative errors are printed (-s)."""
    if twin.__name__ != TWINS["numba"] and not os.environ.get("FASTNN_WINOGRAD_ERRORS_ALL"):
        pytest.skip("measured on the numba twin (the cython one computes the same sums); "
                    "FASTNN_WINOGRAD_ERRORS_ALL=1 measures it too")
    x = mnist_digits(mnist_dir, 32)
    worst = {}
    for layer, (C, F, pad) in enumerate(DEEP_CNN_CONVS):
        W = rng.standard_normal((F, C, 3, 3)) * np.sqrt(2.0 / (C * 9))  # He
        b = np.zeros(F)
        y, cache = reference.conv2d_forward(x, W, b, 1, pad)
        dy = rng.standard_normal(y.shape) * 1e-3
        dx, dW, db = reference.conv2d_backward(dy, cache)
        x32, W32, b32, dy32 = (a.astype(np.float32) for a in (x, W, b, dy))
        # float32 im2col, printed for scale: the error any float32 convolution makes here
        y_i, cache_i = reference.conv2d_forward(x32, W32, b32, 1, pad)
        dx_i, dW_i, _ = reference.conv2d_backward(dy32, cache_i)
        errors = [relative_error(g, w) for g, w in ((y_i, y), (dx_i, dx), (dW_i, dW))]
        report(layer, C, F, pad, "im2col", errors)
        for m in MS:
            y_m = twin.forward(x32, W32, b32, pad, 2, m)
            dx_m, dW_m, db_m = twin.backward(dy32, x32, W32, pad, True, 2, m)
            errors = [relative_error(g, w) for g, w in ((y_m, y), (dx_m, dx), (dW_m, dW))]
            report(layer, C, F, pad, f"F({m}x{m})", errors)
            worst[m] = max(worst.get(m, 0.0), *errors)
            assert_close_to_reference((y_m, dx_m, dW_m, db_m), reference, x, W, b, dy, pad, m,
                                      f"deep-cnn conv{layer + 1} F({m}x{m})", rounded_inputs=True)
        # the next layer's input: ReLU, and the max-pool after every second conv
        x = np.maximum(y, 0.0)
        if layer in POOL_AFTER:
            N, Fc, H, Wd = x.shape
            x = x.reshape(N, Fc, H // 2, 2, Wd // 2, 2).max(axis=(3, 5))  # sizes are even here
    print(f"worst float32 relative error: F(2x2, 3x3) {worst[2]:.1e}, F(4x4, 3x3) {worst[4]:.1e}")
