# The epilogues of the fused kernels (bias + ReLU, then maybe the 2x2 max-pool) and the chain
# rule that undoes them, shared by _dense.pyx, _conv.pyx and _winograd.pyx (inline, so each gets
# its own copy). What they compute is the composition in fastnn/backends/composed.py:
#
#     y  = maxpool2x2(relu(z + b))                      forward, on rows still in cache
#     dz = relu_backward(maxpool2x2_backward(dy), a)    backward, a = relu(z + b)
#
# The pool keeps, for each 2x2 window, one int32 code: where its winner is (0 top left, 1 top
# right, 2 bottom left, 3 bottom right; the first maximum in row-major order wins, as numpy's
# argmax), or -1 where the window's maximum is <= 0. pool(relu(z)) = relu(pool(z)), and where the
# maximum is <= 0 the ReLU blocks the gradient, so backward needs neither z nor y: only dy and
# this code. (int32, not int8: with int8 stores GCC vectorises the pooling loop 16 windows at a
# time, more than a pooled row of the MNIST nets holds, so it ran scalar; 4 at a time it is
# 2.7x faster.)
from cython cimport floating


cdef inline void bias_relu(floating *dst, const floating *src, floating bias,
                           Py_ssize_t n) noexcept nogil:
    # dst[:n] = np.maximum(src[:n] + bias, 0)      (dst may be src)
    cdef Py_ssize_t j
    cdef floating v
    for j in range(n):
        v = src[j] + bias
        dst[j] = v if v > 0 else 0


cdef inline void bias_relu_pool_row(floating *y, int *arg, const floating *top,
                                    const floating *bottom, floating bias,
                                    Py_ssize_t n) noexcept nogil:
    # top, bottom: two rows of z, of which columns 0 .. 2n-1 are pooled (an odd last one is not):
    # window = np.stack([top, bottom])[:, 2j:2j+2] + bias
    # y[j] = max(window.max(), 0); arg[j] = window.argmax() if window.max() > 0 else -1
    # Maxima and selects on loaded values, as in _pool.pyx: no branches for random data to
    # mispredict; the flags are 0 or 1, and integer arithmetic picks the position.
    cdef Py_ssize_t j
    cdef int right_top, right_bottom, lower, at, positive
    cdef floating a, b, c, d, best_top, best_bottom, best
    for j in range(n):
        a, b, c, d = top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]
        right_top = b > a
        best_top = b if right_top else a
        right_bottom = d > c
        best_bottom = d if right_bottom else c
        lower = best_bottom > best_top
        best = (best_bottom if lower else best_top) + bias
        at = right_top + lower * (2 + right_bottom - right_top)
        positive = best > 0
        y[j] = best if best > 0 else 0   # a max instruction
        arg[j] = positive * (at + 1) - 1  # at, or -1: arithmetic (a select here became a branch)


cdef inline void relu_gradient(floating *dz, const floating *dy, const floating *y,
                               Py_ssize_t n) noexcept nogil:
    # dz[:n] = dy[:n] * (y[:n] > 0)      (a product, not a branch, as _activation.relu_backward)
    cdef Py_ssize_t j
    for j in range(n):
        dz[j] = dy[j] * (y[j] > 0)


cdef inline void unpool_gradient(floating *dz, const floating *dy, const int *arg,
                                 Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    # dz (OH, OW) one plane; dy, arg (OH // 2, OW // 2):
    # dz = 0; dz[2i + arg[i, j] // 2, 2j + arg[i, j] % 2] = dy[i, j] where arg[i, j] >= 0
    # Every element of dz is written once, window by window (no zeroing pass first), as dy times
    # a one-hot mask looked up by the winner: with selects (g if s == k else 0) GCC emits a
    # switch whose branches random winners mispredict, 4-7x slower.
    cdef Py_ssize_t OH2 = OH // 2, OW2 = OW // 2, i, j, k
    cdef floating pick[20]  # row s + 1 (s = -1 .. 3): the window's four positions, 1 at s
    cdef const floating *w
    cdef floating g
    cdef floating *top
    cdef floating *bottom
    for k in range(20):
        pick[k] = (k % 4) == (k // 4 - 1)
    for i in range(OH2):
        top = dz + 2 * i * OW
        bottom = top + OW
        for j in range(OW2):
            g, w = dy[i * OW2 + j], pick + 4 * (arg[i * OW2 + j] + 1)
            top[2 * j] = g * w[0]
            top[2 * j + 1] = g * w[1]
            bottom[2 * j] = g * w[2]
            bottom[2 * j + 1] = g * w[3]
        if OW % 2:  # the odd last column: outside every window
            top[OW - 1] = 0
            bottom[OW - 1] = 0
    if OH % 2:  # the odd last row
        for j in range(OW):
            dz[(OH - 1) * OW + j] = 0


cdef inline void chain_gradient(floating *dz, const floating *dy, const floating *y,
                                const int *arg, Py_ssize_t F, Py_ssize_t OH,
                                Py_ssize_t OW) noexcept nogil:
    # dz (F, OH, OW), one image's gradient at z, from its dy and, for conv + ReLU, y (F, OH, OW)
    # the forward output (arg NULL); for conv + ReLU + pool, arg (F, OH // 2, OW // 2) (y NULL)
    cdef Py_ssize_t f, plane = OH * OW, pooled = (OH // 2) * (OW // 2)
    if arg == NULL:
        relu_gradient(dz, dy, y, F * plane)
        return
    for f in range(F):
        unpool_gradient(dz + f * plane, dy + f * pooled, arg + f * pooled, OH, OW)
