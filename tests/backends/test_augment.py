"""warp_affine (bilinear affine warp, zeros outside): the reference against a per-pixel loop and
exact shifts, and every compiled backend against the reference."""
import math

import numpy as np
import pytest

from fastnn.backends.numpy.augment import warp_affine as reference_warp
from fastnn.errors import ShapeError

from .agree import noncontiguous, run
from ..conftest import SIMULATED_CUDA

ATOL = 1e-5  # images in [0, 1]; coordinates and weights are float32 in every backend


def images(rng, *shape):
    return rng.random(shape, dtype=np.float32)


def thetas(rng, n, h, w, degrees=15.0, shift=3.0):
    """(n, 2, 3) float32: rotations up to ``degrees`` about the centre plus shifts up to ``shift``
    pixels, as output pixel (j, i, 1) -> source point (u, v)."""
    angle = np.deg2rad(rng.uniform(-degrees, degrees, n))
    move = rng.uniform(-shift, shift, (n, 2))
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1)  # (n, 2, 2)
    offset = centre + move - np.einsum("nij,j->ni", rot, centre)
    return np.concatenate([rot, offset[:, :, None]], axis=2).astype(np.float32)


def shift_theta(n, dx, dy):
    """y[i, j] = x[i - dy, j - dx]: the image moved dx columns right and dy rows down."""
    return np.tile(np.array([[1, 0, -dx], [0, 1, -dy]], np.float32), (n, 1, 1))


def slow_warp(x, theta):
    """The definition, one pixel and one tap at a time, in float32 like the kernels."""
    N, C, H, W = x.shape
    y = np.zeros(x.shape, np.float32)
    f = np.float32
    for n in range(N):
        t = theta[n]
        for i in range(H):
            for j in range(W):
                u = t[0, 0] * f(j) + t[0, 1] * f(i) + t[0, 2]
                v = t[1, 0] * f(j) + t[1, 1] * f(i) + t[1, 2]
                u0, v0 = math.floor(u), math.floor(v)
                fu, fv = u - f(u0), v - f(v0)
                for c in range(C):
                    total = f(0)
                    for dv, du, weight in ((0, 0, (1 - fv) * (1 - fu)), (0, 1, (1 - fv) * fu),
                                           (1, 0, fv * (1 - fu)), (1, 1, fv * fu)):
                        r, s = v0 + dv, u0 + du
                        if 0 <= r < H and 0 <= s < W:
                            total += f(weight) * x[n, c, r, s]
                    y[n, c, i, j] = total
    return y


def shifted(x, dx, dy):
    """np.roll by (dy, dx) with zeros instead of the wrapped-around pixels."""
    y = np.roll(x, (dy, dx), axis=(2, 3))
    H, W = x.shape[2:]
    if dy > 0:
        y[:, :, :dy] = 0
    elif dy < 0:
        y[:, :, H + dy:] = 0
    if dx > 0:
        y[:, :, :, :dx] = 0
    elif dx < 0:
        y[:, :, :, W + dx:] = 0
    return y


# ------------------------------------------------------------------------------ the reference

def test_reference_matches_a_per_pixel_loop(rng):
    x = images(rng, 2, 2, 5, 6)
    theta = thetas(rng, 2, 5, 6)
    theta[1] = [[0.9, 0.3, 0.7], [-0.2, 1.1, -0.6]]  # not a rotation: rows and columns not interchangeable
    y = reference_warp(x, theta)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, slow_warp(x, theta), rtol=0, atol=1e-6)


def test_reference_matches_the_loop_for_a_transpose(rng):
    # theta swapping u and v: y[i, j] = x[j, i] on a square image (catches a row/column mix-up)
    x = images(rng, 1, 2, 4, 4)
    theta = np.array([[[0, 1, 0], [1, 0, 0]]], np.float32)
    np.testing.assert_array_equal(reference_warp(x, theta), x.transpose(0, 1, 3, 2))
    np.testing.assert_array_equal(slow_warp(x, theta), x.transpose(0, 1, 3, 2))


def test_identity_returns_x_exactly(rng):
    x = images(rng, 3, 2, 7, 5)
    theta = shift_theta(3, 0, 0)
    np.testing.assert_array_equal(reference_warp(x, theta), x)


@pytest.mark.parametrize("dx,dy", [(2, 0), (0, 1), (-1, 3), (3, -2), (-4, -1)])
def test_integer_shift_is_a_roll_with_zeros(rng, dx, dy):
    x = images(rng, 2, 1, 6, 7)
    np.testing.assert_array_equal(reference_warp(x, shift_theta(2, dx, dy)), shifted(x, dx, dy))


def test_half_pixel_shift_averages_neighbours(rng):
    x = images(rng, 1, 1, 4, 5)
    y = reference_warp(x, shift_theta(1, -0.5, 0))  # samples at u = j + 0.5
    np.testing.assert_allclose(y[..., :-1], (x[..., :-1] + x[..., 1:]) / 2, atol=1e-6)
    np.testing.assert_allclose(y[..., -1], x[..., -1] / 2, atol=1e-6)  # the right neighbour is padding


def test_far_shift_gives_zeros(rng):
    x = images(rng, 2, 1, 5, 5)
    for theta in (shift_theta(2, 100, 0), shift_theta(2, 0, -6), shift_theta(2, 1e9, 1e9),
                  np.full((2, 2, 3), np.nan, np.float32)):
        np.testing.assert_array_equal(reference_warp(x, theta), 0)


def test_float64_images_stay_float64(rng):
    x = images(rng, 2, 1, 5, 5).astype(np.float64)
    theta = thetas(rng, 2, 5, 5)
    y = reference_warp(x, theta)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, reference_warp(x.astype(np.float32), theta), atol=1e-6)


# ---------------------------------------------------------------------- shape errors, one place

BAD_THETAS = [(2, 3), (3, 2, 3), (2, 3, 2), (2, 6), (2, 2, 3, 1)]


@pytest.mark.parametrize("shape", BAD_THETAS)
def test_wrong_theta_shape_is_a_clear_error(shape):
    x = np.zeros((2, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"warp_affine: theta must have shape \(N, 2, 3\) = \(2, 2, 3\)"):
        reference_warp(x, np.zeros(shape, np.float32))


def test_images_must_be_4d():
    with pytest.raises(ShapeError, match=r"warp_affine: x must be images of shape \(N, C, H, W\)"):
        reference_warp(np.zeros((2, 16), np.float32), np.zeros((2, 2, 3), np.float32))


def test_every_backend_checks_the_theta_shape(candidate):
    x = candidate.to_device(np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"warp_affine: theta must have shape \(N, 2, 3\) = \(2, 2, 3\)"):
        candidate.warp_affine(x, candidate.to_device(np.zeros((3, 2, 3), np.float32)))


# -------------------------------------------------------------- compiled backends vs reference

def case_shape(K, shape):
    """The CUDA simulator runs every thread in Python: tiny images there."""
    return (2, 2, 5, 6) if K.NAME == "cuda" and SIMULATED_CUDA else shape


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (3, 3, 9, 7), (1, 2, 6, 11)])
def test_matches_reference_rotations_and_shifts(candidate, rng, shape):
    N, C, H, W = shape = case_shape(candidate, shape)
    x, theta = images(rng, *shape), thetas(rng, N, H, W)
    y, _ = run(candidate, "warp_affine", x, theta)  # also checks x and theta are unchanged
    y = candidate.to_host(y)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, reference_warp(x, theta), rtol=0, atol=ATOL)


def test_matches_reference_far_out(candidate, rng):
    N, C, H, W = shape = case_shape(candidate, (4, 1, 8, 8))
    x = images(rng, *shape)
    theta = thetas(rng, N, H, W)
    theta[:, 0, 2] += np.float32([100, -100, 0, 1e9][:N])  # every source point outside the image
    theta[:, 1, 2] += np.float32([0, 0, 50, -1e9][:N])
    theta[-1] = np.nan  # NaN coordinates: outside too
    y, _ = run(candidate, "warp_affine", x, theta)
    np.testing.assert_array_equal(candidate.to_host(y), 0)
    np.testing.assert_array_equal(reference_warp(x, theta), 0)


def test_identity_and_integer_shift_exact(candidate, rng):
    N, C, H, W = shape = case_shape(candidate, (2, 2, 7, 9))
    x = images(rng, *shape)
    y, _ = run(candidate, "warp_affine", x, shift_theta(N, 0, 0))
    np.testing.assert_array_equal(candidate.to_host(y), x)
    y, _ = run(candidate, "warp_affine", x, shift_theta(N, 2, -1))
    np.testing.assert_array_equal(candidate.to_host(y), shifted(x, 2, -1))


def test_returns_a_new_array_and_leaves_inputs_alone(candidate, rng):
    N, C, H, W = shape = case_shape(candidate, (2, 1, 6, 6))
    x, theta = images(rng, *shape), thetas(rng, N, H, W)
    x_before, theta_before = x.copy(), theta.copy()
    xd, td = candidate.to_device(x), candidate.to_device(theta)
    y = candidate.warp_affine(xd, td)
    assert y is not xd
    candidate.to_host(y)[...] = -1  # writing into the result (a host copy on cuda) never reaches x
    np.testing.assert_array_equal(candidate.to_host(xd), x_before)
    np.testing.assert_array_equal(candidate.to_host(td), theta_before)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(theta, theta_before)


def test_noncontiguous_and_float64_inputs_on_cpu(candidate, rng):
    if candidate.NAME == "cuda":
        pytest.skip("cuda takes device arrays, which to_device makes contiguous float32")
    x, theta = images(rng, 2, 1, 6, 8), thetas(rng, 2, 6, 8)
    want = reference_warp(x, theta)
    got = candidate.warp_affine(noncontiguous(x), noncontiguous(theta))
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    got = candidate.warp_affine(x.astype(np.float64), theta.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)

