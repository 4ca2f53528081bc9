"""Affine warps of images (bilinear, zeros outside). Mirrors ../numpy/augment.py via fastnn_ext/_augment.pyx."""
import numpy as np

from fastnn_ext import _augment

from ..numpy.augment import check_warp_affine
from ._prep import floats


def warp_affine(x, theta):
    # x (N, C, H, W), theta (N, 2, 3) -> y (N, C, H, W), a new array
    check_warp_affine(np.shape(x), np.shape(theta))
    (x,) = floats(x)
    theta = np.ascontiguousarray(theta, dtype=np.float32)  # coordinates are float32 for every x
    y = np.empty(x.shape, dtype=x.dtype)
    _augment.warp_affine(y, x, theta)
    return y
