# Helpers shared by every fastnn_ext module (inline, so each .pyx gets its own copy):
# row-major GEMM on top of SciPy's BLAS, float/double maths, ReLU and max-pooling comparisons that
# treat NaN as the reference does, and how many OpenMP threads a loop of a given size deserves.
# Compiler directives are set once, in setup.py.
from cython cimport floating
from libc.math cimport exp, expf, log, logf, sqrt, sqrtf, tanh, tanhf
from scipy.linalg.cython_blas cimport dgemm, sgemm

# not `cimport openmp`, which includes omp.h even in the serial build: _omp_shim.h includes it
# only under OpenMP and otherwise says one thread (see there and setup.py)
cdef extern from "_omp_shim.h":
    enum: FASTNN_OPENMP  # 1 if this module was compiled with OpenMP, 0 in the serial build
    int omp_get_max_threads() noexcept nogil

# below this many element-operations a loop runs on one thread: waking the OpenMP team
# costs more than it saves
cdef enum:
    PARALLEL_MIN = 32768


cdef inline int threads_for(Py_ssize_t work) noexcept nogil:
    # 1 for small loops, else the OpenMP limit (set by fastnn.threads via threadpoolctl)
    return 1 if work < PARALLEL_MIN else omp_get_max_threads()


# NaN and infinities go where the reference sends them (fastnn/backends/contract.py): a NaN weight
# must reach the loss, so that training stops.

cdef inline floating relu(floating v) noexcept nogil:
    # np.maximum(v, 0): NaN stays NaN, -inf becomes 0. (``v if v > 0 else 0`` turns NaN into 0.)
    # A compare and a select all the same: loops over it still vectorise. (<floating> 0: a double
    # 0 makes float loops compare in double, or stay scalar.)
    return v if not v <= <floating> 0 else 0


cdef inline bint beats(floating v, floating best) noexcept nogil:
    # whether v takes a window's maximum over from best in np.argmax's order (row-major): the
    # first NaN wins, otherwise only a strictly larger value (ties go to the first). Written as a
    # select on v == v, which GCC can vectorise; combined with | and &, the same comparisons kept
    # loops scalar. Where four values decide at once (2x2 windows), argmax4 is cheaper.
    return (v > best) if v == v else (best == best)


cdef inline int argmax4(floating a, floating b, floating c, floating d,
                        floating *best) noexcept nogil:
    # s = np.argmax([a, b, c, d]) (the first maximum, or the first NaN); best[0] = [a, b, c, d][s].
    # Plain comparisons and selects find the first maximum (a NaN never wins one); then the first
    # NaN, if there is one, takes over. All arithmetic on 0/1 flags: the 2x2 pooling loops
    # vectorise, with no branches for random data to mispredict, and run 1.3x faster than with
    # three NaN-aware comparisons (beats).
    cdef int right_top = b > a, right_bottom = d > c, lower, at
    cdef int nan_a = a != a, nan_b = b != b, nan_c = c != c
    cdef int nan = nan_a | nan_b | nan_c | (d != d)
    cdef floating best_top = b if right_top else a, best_bottom = d if right_bottom else c
    lower = best_bottom > best_top
    at = right_top + lower * (2 + right_bottom - right_top)
    best[0] = (a + b + c + d) if nan else (best_bottom if lower else best_top)  # NaN if nan
    return (1 - nan_a) * (1 + (1 - nan_b) * (1 + (1 - nan_c))) if nan else at


cdef inline bint all_finite(const floating *a, Py_ssize_t n) noexcept nogil:
    # np.isfinite(a[:n]).all(): a - a is 0, but NaN for inf and NaN (an integer OR: it vectorises)
    cdef Py_ssize_t i
    cdef int bad = 0
    for i in range(n):
        bad = bad | (a[i] - a[i] != <floating> 0)
    return not bad


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
