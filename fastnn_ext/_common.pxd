# Helpers shared by every fastnn_ext module (inline, so each .pyx gets its own copy):
# row-major GEMM on top of SciPy's BLAS, float/double maths, and how many OpenMP
# threads a loop of a given size deserves. Compiler directives are set once, in setup.py.
from cython cimport floating
from libc.math cimport exp, expf, log, logf, sqrt, sqrtf, tanh, tanhf
from scipy.linalg.cython_blas cimport dgemm, sgemm
cimport openmp

# below this many element-operations a loop runs on one thread: waking the OpenMP team
# costs more than it saves
cdef enum:
    PARALLEL_MIN = 32768


cdef inline int threads_for(Py_ssize_t work) noexcept nogil:
    # 1 for small loops, else the OpenMP limit (set by fastnn.threads via threadpoolctl)
    return 1 if work < PARALLEL_MIN else openmp.omp_get_max_threads()


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating *a, int lda, const floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    # C (m, n) = alpha * op(A) @ op(B) + beta * C, all row-major (C order).
    # BLAS is column-major, and a row-major matrix is its transpose in column-major,
    # so this asks BLAS for C.T = op(B).T @ op(A).T: the operands swap places.
    # A leading dimension of 0 (an empty operand) is refused by BLAS even where it is never
    # read: 1 is always valid then.
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m == 0 or n == 0:
        return
    lda, ldb, ldc = max(lda, 1), max(ldb, 1), max(ldc, 1)
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)


cdef inline floating fsqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating fexp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating flog(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating ftanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline floating vsum(const floating *a, Py_ssize_t n) noexcept nogil:
    # a[:n].sum(), with 8 independent partial sums so the adds pipeline (and vectorise)
    # instead of waiting on one another
    cdef floating s[8]
    cdef Py_ssize_t i, k, n8 = n - n % 8
    for k in range(8):
        s[k] = 0
    for i in range(0, n8, 8):
        for k in range(8):
            s[k] += a[i + k]
    for i in range(n8, n):
        s[i - n8] += a[i]
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


cdef inline void tap_range(Py_ssize_t size, Py_ssize_t out, Py_ssize_t k, Py_ssize_t stride,
                           Py_ssize_t pad, Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    # The outputs o, lo <= o < hi, whose input o * stride + k - pad lies in 0..size-1:
    # the part of a row that filter tap k sees without falling into the zero padding.
    cdef Py_ssize_t first = pad - k, last = size - 1 + pad - k
    lo[0] = 0 if first <= 0 else (first + stride - 1) // stride
    hi[0] = 0 if last < 0 else last // stride + 1
    if hi[0] > out:
        hi[0] = out
    if lo[0] > hi[0]:
        lo[0] = hi[0]
