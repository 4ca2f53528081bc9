"""Run one kernel on the reference and on a candidate backend with the same host inputs.

Array arguments go through the candidate's ``to_device`` and results come back through
``to_host``, so the same test drives a CPU backend and the CUDA one.
"""
import contextlib
import os

import numpy as np

# Where the tolerances come from: float32's unit roundoff is u = 2**-24 = 6e-8. Two backends sum
# the K products of a dot product in different orders (blocking, SIMD width, threads: they differ
# between AVX2 and AVX-512 hosts); with O(1) inputs the sum is O(sqrt(K)) and the two roundings
# differ by about u * K typically (a random walk of K steps of size u * sqrt(K)), u * K**2 at worst.
# rtol 2e-4 is 3,300 u; atol 2e-5 * sqrt(K) (``scale``) is 330 / sqrt(K) times the typical
# difference: 8x or more for every K <= 1,700 the tests use, while a wrong index moves values by O(1).
F32 = dict(rtol=2e-4, atol=2e-5)


def to_candidate(K, value):
    return K.to_device(value) if isinstance(value, np.ndarray) else value


def to_numpy(K, value):
    if isinstance(value, tuple):
        return tuple(to_numpy(K, v) for v in value)
    if value is None or isinstance(value, (int, float)):
        return value
    return K.to_host(value)


def run(K, name, *args, **kwargs):
    """K.name(*args) with array args moved to K's memory; inputs are checked unchanged."""
    before = [a.copy() for a in args if isinstance(a, np.ndarray)]
    moved = [to_candidate(K, a) for a in args]
    out = getattr(K, name)(*moved, **kwargs)
    after = [K.to_host(m) for a, m in zip(args, moved) if isinstance(a, np.ndarray)]
    for i, (b, a) in enumerate(zip(before, after)):
        np.testing.assert_array_equal(a, b, err_msg=f"{name} wrote into its input #{i}")
    return out, moved


def assert_close(got, want, scale=1.0, what=""):
    """float32 agreement; ``scale`` widens atol for long reductions (e.g. sqrt of the sum length)."""
    np.testing.assert_allclose(got, want, rtol=F32["rtol"], atol=F32["atol"] * scale, err_msg=what)


def noncontiguous(a):
    """The same values as ``a`` in a strided (non-contiguous) view."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    view = wide[..., ::2]
    assert not view.flags.c_contiguous
    return view


def conv_algorithms(K):
    """The convolution algorithms backend K implements (the reference and cuda: im2col only)."""
    return getattr(K, "CONV_ALGORITHMS", ("im2col",))


@contextlib.contextmanager
def forced_conv_algorithm(name):
    """FASTNN_CONV_ALGO=name inside the block (config.conv_algorithm reads it on every call)."""
    before = os.environ.get("FASTNN_CONV_ALGO")
    os.environ["FASTNN_CONV_ALGO"] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ["FASTNN_CONV_ALGO"]
        else:
            os.environ["FASTNN_CONV_ALGO"] = before
