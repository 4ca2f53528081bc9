"""Affine warps of images (bilinear, zeros outside). Mirrors fastnn/backends/numpy/augment.py.

Every image is independent, so the kernel is one ``prange`` over the N images. Each output pixel's
source point (u, v) = theta[n] @ (j, i, 1), its floor and its four weights are computed once, in
float32 as in the reference, and shared by the image's channels; the four taps are summed in the
reference's order, a tap outside the image adding nothing.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport floorf

from fastnn_ext._common cimport FASTNN_OPENMP, threads_for

OPENMP = bool(FASTNN_OPENMP)  # compiled with OpenMP; False: the serial build (_omp_shim.h)


cdef void _warp_image(floating[:, :, :, ::1] y, const floating[:, :, :, ::1] x,
                      const float[:, :, ::1] theta, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3], i, j, c
    cdef float t00 = theta[n, 0, 0], t01 = theta[n, 0, 1], t02 = theta[n, 0, 2]
    cdef float t10 = theta[n, 1, 0], t11 = theta[n, 1, 1], t12 = theta[n, 1, 2]
    cdef float u, v, uf, vf, fu, fv, w00, w01, w10, w11, ONE = 1  # float 1: float arithmetic
    cdef Py_ssize_t u0, v0
    cdef bint left, right, top, bottom
    cdef floating acc
    for i in range(H):
        for j in range(W):
            # u, v = theta[n] @ (j, i, 1)
            u = t00 * <float> j + t01 * <float> i + t02
            v = t10 * <float> j + t11 * <float> i + t12
            if not (u > -ONE and u < <float> W and v > -ONE and v < <float> H):
                for c in range(C):  # no neighbour in the image (or a NaN coordinate): zero
                    y[n, c, i, j] = 0
                continue
            # u0, v0 = np.floor(u), np.floor(v); fu, fv = u - u0, v - v0
            uf = floorf(u)
            vf = floorf(v)
            fu = u - uf
            fv = v - vf
            u0 = <Py_ssize_t> uf
            v0 = <Py_ssize_t> vf
            w00 = (ONE - fv) * (ONE - fu)
            w01 = (ONE - fv) * fu
            w10 = fv * (ONE - fu)
            w11 = fv * fu
            # which neighbours are in the image (-1 <= u0 < W and -1 <= v0 < H here)
            left = u0 >= 0
            right = u0 + 1 < W
            top = v0 >= 0
            bottom = v0 + 1 < H
            for c in range(C):
                # y = w00 x[v0, u0] + w01 x[v0, u0+1] + w10 x[v0+1, u0] + w11 x[v0+1, u0+1], zeros outside
                acc = 0
                if top and left:
                    acc = acc + w00 * x[n, c, v0, u0]
                if top and right:
                    acc = acc + w01 * x[n, c, v0, u0 + 1]
                if bottom and left:
                    acc = acc + w10 * x[n, c, v0 + 1, u0]
                if bottom and right:
                    acc = acc + w11 * x[n, c, v0 + 1, u0 + 1]
                y[n, c, i, j] = acc


def warp_affine(floating[:, :, :, ::1] y, const floating[:, :, :, ::1] x, const float[:, :, ::1] theta):
    # x (N, C, H, W), theta (N, 2, 3) float32 -> y (N, C, H, W)
    cdef Py_ssize_t N = x.shape[0], n
    for n in prange(N, nogil=True, num_threads=threads_for(4 * x.shape[0] * x.shape[1] * x.shape[2]
                                                           * x.shape[3]),
                    schedule="static"):
        _warp_image(y, x, theta, n)
