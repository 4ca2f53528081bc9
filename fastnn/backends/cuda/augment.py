"""Affine warps of images (bilinear, zeros outside). Mirrors fastnn/backends/numpy/augment.py.

One thread per output pixel (n, c, i, j): it computes its source point (u, v) = theta[n] @ (j, i, 1),
the floor and the four weights in float32 as the reference does, and sums the taps in the
reference's order, a tap outside the image adding nothing.
"""
import math

import numpy as np
from numba import cuda, float32

from ..numpy.augment import check_warp_affine
from .arrays import empty, launch, require_device

ONE = np.float32(1.0)
ZERO = np.float32(0.0)


@cuda.jit
def warp_affine_kernel(y, x, theta):
    # x (N, C, H, W), theta (N, 2, 3) -> y (N, C, H, W)
    for t in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        C, H, W = y.shape[1], y.shape[2], y.shape[3]
        n, c = t // (C * H * W), (t // (H * W)) % C
        i, j = (t // W) % H, t % W
        row, col = float32(i), float32(j)
        # u, v = theta[n] @ (j, i, 1)
        u = theta[n, 0, 0] * col + theta[n, 0, 1] * row + theta[n, 0, 2]
        v = theta[n, 1, 0] * col + theta[n, 1, 1] * row + theta[n, 1, 2]
        acc = ZERO
        if u > -ONE and u < float32(W) and v > -ONE and v < float32(H):  # some neighbour is in the image
            # u0, v0 = np.floor(u), np.floor(v); fu, fv = u - u0, v - v0
            u0, v0 = int(math.floor(u)), int(math.floor(v))
            fu, fv = u - float32(u0), v - float32(v0)
            # y = w00 x[v0, u0] + w01 x[v0, u0+1] + w10 x[v0+1, u0] + w11 x[v0+1, u0+1], zeros outside
            # (-1 <= u0 < W and -1 <= v0 < H here)
            if v0 >= 0 and u0 >= 0:
                acc += (ONE - fv) * (ONE - fu) * x[n, c, v0, u0]
            if v0 >= 0 and u0 + 1 < W:
                acc += (ONE - fv) * fu * x[n, c, v0, u0 + 1]
            if v0 + 1 < H and u0 >= 0:
                acc += fv * (ONE - fu) * x[n, c, v0 + 1, u0]
            if v0 + 1 < H and u0 + 1 < W:
                acc += fv * fu * x[n, c, v0 + 1, u0 + 1]
        y[n, c, i, j] = acc


def warp_affine(x, theta):
    # x (N, C, H, W), theta (N, 2, 3) -> y (N, C, H, W), a new device array
    require_device("warp_affine", x=x, theta=theta)
    check_warp_affine(x.shape, theta.shape)
    y = empty(tuple(x.shape))
    if y.size:
        warp_affine_kernel[launch(y.size)](y, x, theta)
    return y
