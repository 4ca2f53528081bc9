"""Affine warps of images (bilinear, zeros outside) with Numba. Mirrors fastnn/backends/numpy/augment.py.

One image per parallel iteration: each output pixel's source point, floor and weights are
computed once (float32, as in the reference) and shared by the image's channels. No fastmath:
the sums are the reference's, in its order, so the identity returns x exactly.
"""
import numpy as np
from numba import njit, prange

from ..numpy.augment import check_warp_affine
from ._common import PRANGE, ZERO, f32

ONE = np.float32(1.0)


@njit(cache=True, parallel=PRANGE, fastmath=False)
def _warp(y, x, theta):
    # x (N, C, H, W), theta (N, 2, 3) -> y (N, C, H, W)
    N, C, H, W = x.shape
    width, height = np.float32(W), np.float32(H)
    for n in prange(N):
        t00, t01, t02 = theta[n, 0, 0], theta[n, 0, 1], theta[n, 0, 2]
        t10, t11, t12 = theta[n, 1, 0], theta[n, 1, 1], theta[n, 1, 2]
        for i in range(H):
            row = np.float32(i)
            for j in range(W):
                col = np.float32(j)
                # u, v = theta[n] @ (j, i, 1)
                u = t00 * col + t01 * row + t02
                v = t10 * col + t11 * row + t12
                if not (u > -ONE and u < width and v > -ONE and v < height):  # no neighbour (or NaN)
                    for c in range(C):
                        y[n, c, i, j] = ZERO
                    continue
                # u0, v0 = np.floor(u), np.floor(v); fu, fv = u - u0, v - v0
                uf, vf = np.floor(u), np.floor(v)
                fu, fv = u - uf, v - vf
                u0, v0 = int(uf), int(vf)
                w00, w01 = (ONE - fv) * (ONE - fu), (ONE - fv) * fu
                w10, w11 = fv * (ONE - fu), fv * fu
                # which neighbours are in the image (-1 <= u0 < W and -1 <= v0 < H here)
                left, right = u0 >= 0, u0 + 1 < W
                top, bottom = v0 >= 0, v0 + 1 < H
                for c in range(C):
                    # y = w00 x[v0, u0] + w01 x[v0, u0+1] + w10 x[v0+1, u0] + w11 x[v0+1, u0+1], zeros outside
                    acc = ZERO
                    if top and left:
                        acc += w00 * x[n, c, v0, u0]
                    if top and right:
                        acc += w01 * x[n, c, v0, u0 + 1]
                    if bottom and left:
                        acc += w10 * x[n, c, v0 + 1, u0]
                    if bottom and right:
                        acc += w11 * x[n, c, v0 + 1, u0 + 1]
                    y[n, c, i, j] = acc


def warp_affine(x, theta):
    # x (N, C, H, W), theta (N, 2, 3) -> y (N, C, H, W), a new array
    check_warp_affine(np.shape(x), np.shape(theta))
    x, theta = f32(x), f32(theta)
    y = np.empty(x.shape, np.float32)
    _warp(y, x, theta)
    return y
