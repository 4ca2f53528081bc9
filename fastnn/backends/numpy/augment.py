"""Affine warps of images, bilinear with zeros outside: the reference for data augmentation.

For output pixel (row i, column j) of image n the source point is (u, v) = theta[n] @ (j, i, 1):
u a column, v a row, in pixel-index units. With u0, v0 = floor(u), floor(v) and fu, fv the
fractions left over,

    y[n, c, i, j] = (1-fv)(1-fu) x[v0, u0] + (1-fv) fu x[v0, u0+1] + fv (1-fu) x[v0+1, u0] + fv fu x[v0+1, u0+1]

summed in that order, where a neighbour outside the image adds nothing (zero padding). Coordinates
and weights are float32 in every backend. A point with no neighbour in the image (-1 < u < W and
-1 < v < H fail, which a NaN coordinate fails too) gives 0. The identity theta returns x exactly.

``check_warp_affine`` is the one shape check every backend's warp_affine makes.
"""
import numpy as np

from ...errors import ShapeError

# the four neighbours in the order they are summed: (row offset, column offset)
TAPS = ((0, 0), (0, 1), (1, 0), (1, 1))


def check_warp_affine(x_shape, theta_shape):
    """Raise ShapeError (a ValueError) unless x is (N, C, H, W) and theta is (N, 2, 3)."""
    x_shape, theta_shape = tuple(x_shape), tuple(theta_shape)
    if len(x_shape) != 4:
        raise ShapeError(f"warp_affine: x must be images of shape (N, C, H, W), got shape {x_shape}")
    expected = (x_shape[0], 2, 3)
    if theta_shape != expected:
        raise ShapeError(f"warp_affine: theta must have shape (N, 2, 3) = {expected}, one affine map per "
                         f"image of x {x_shape}, got shape {theta_shape}")


def source_points(theta, H, W):
    """(u, v), each (N, H, W) float32: the point of x that output pixel (i, j) samples."""
    theta = np.asarray(theta, dtype=np.float32)
    i = np.arange(H, dtype=np.float32)[:, None]  # rows    (H, 1)
    j = np.arange(W, dtype=np.float32)[None, :]  # columns (1, W)
    t = theta[:, :, :, None, None]  # (N, 2, 3, 1, 1)
    u = t[:, 0, 0] * j + t[:, 0, 1] * i + t[:, 0, 2]
    v = t[:, 1, 0] * j + t[:, 1, 1] * i + t[:, 1, 2]
    return u, v


def warp_affine(x, theta):
    # x (N, C, H, W), theta (N, 2, 3) -> y (N, C, H, W), a new array
    x = np.asarray(x)
    check_warp_affine(x.shape, np.shape(theta))
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
    N, C, H, W = x.shape
    u, v = source_points(theta, H, W)
    seen = (u > -1) & (u < W) & (v > -1) & (v < H)  # some neighbour is in the image (False for NaN)
    u, v = np.where(seen, u, np.float32(-2)), np.where(seen, v, np.float32(-2))  # -2: no neighbour
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = u - u0, v - v0
    u0, v0 = u0.astype(np.int64), v0.astype(np.int64)
    weights = ((1 - fv) * (1 - fu), (1 - fv) * fu, fv * (1 - fu), fv * fu)  # (N, H, W) float32 each
    n = np.arange(N)[:, None, None]
    y = np.zeros(x.shape, dtype=x.dtype)
    for (dv, du), w in zip(TAPS, weights):
        rows, cols = v0 + dv, u0 + du  # (N, H, W)
        inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
        # x[n, :, rows, cols] is (N, H, W, C) (the advanced indices go first): back to (N, C, H, W)
        taps = np.moveaxis(x[n, :, np.clip(rows, 0, H - 1), np.clip(cols, 0, W - 1)], -1, 1)
        y += np.where(inside[:, None], w[:, None] * taps, 0)
    return y
