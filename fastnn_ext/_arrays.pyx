"""Row gather for mini-batches. Mirrors ``gather`` in fastnn/backends/numpy/arrays.py.

The rows are copied as raw bytes, so one kernel serves float32 images and int64 labels.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from fastnn_ext._common cimport FASTNN_OPENMP, threads_for

OPENMP = bool(FASTNN_OPENMP)  # compiled with OpenMP; False: the serial build (_omp_shim.h)


def gather(unsigned char[:, ::1] out, const unsigned char[:, ::1] x, const int64_t[::1] indices):
    # x (N, row_bytes), indices (B,) -> out (B, row_bytes): out[b] = x[indices[b]]
    cdef Py_ssize_t B = indices.shape[0], N = x.shape[0], row = x.shape[1], k
    cdef int64_t i
    for k in range(B):  # check first: no half-copied batch on a bad index
        i = indices[k]
        if i < -N or i >= N:
            raise IndexError(f"index {i} is out of bounds for axis 0 with size {N}")
    if row == 0:
        return
    for k in prange(B, nogil=True, num_threads=threads_for(B * row // 4), schedule="static"):
        i = indices[k]
        if i < 0:
            i = i + N
        memcpy(&out[k, 0], &x[i, 0], row)
