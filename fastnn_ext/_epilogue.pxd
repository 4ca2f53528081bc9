# The epilogues of the fused kernels (bias + ReLU, then maybe the 2x2 max-pool) and the chain
# rule that undoes them, shared by _dense.pyx, _conv.pyx and _winograd.pyx (inline, so each gets
# its own copy). What they compute is the composition in fastnn/backends/composed.py:
#
#     y  = maxpool2x2(relu(z + b))                      forward, on rows still in cache
#     dz = relu_backward(maxpool2x2_backward(dy), a)    backward, a = relu(z + b)
#
# The pool keeps, for each 2x2 window, one int32 code: where its winner s is (0 top left, 1 top
# right, 2 bottom left, 3 bottom right) and whether the ReLU lets its gradient through: s where
# y > 0, -1 - s where it does not. The winner is the window's argmax in the composition: the first
# maximum of z + b in row-major order, as numpy's argmax, or the first NaN (y is NaN then, and
# blocks, since NaN > 0 is false); where the window's maximum is <= 0 the ReLU made all four 0, so
# s is 0. pool(relu(z)) = relu(pool(z)), so backward needs neither z nor y: only dy and this code,
# and it is dy * (y > 0) at s, 0 elsewhere (a blocked dy of inf or NaN gives NaN at s alone, as
# the composition does). (int32, not int8: with int8 stores GCC vectorises the pooling loop 16
# windows at a time, more than a pooled row of the MNIST nets holds, so it ran scalar; 4 at a time
# it is 2.7x faster.)
from cython cimport floating

from fastnn_ext._common cimport all_finite, argmax4, relu


cdef inline void bias_relu(floating *dst, const floating *src, floating bias,
                           Py_ssize_t n) noexcept nogil:
    # dst[:n] = np.maximum(src[:n] + bias, 0)      (dst may be src; NaN stays NaN)
    cdef Py_ssize_t j
    for j in range(n):
        dst[j] = relu(src[j] + bias)


cdef inline void bias_relu_pool_row(floating *y, int *arg, const floating *top,
                                    const floating *bottom, floating bias,
                                    Py_ssize_t n) noexcept nogil:
    # top, bottom: two rows of z, of which columns 0 .. 2n-1 are pooled (an odd last one is not):
    # window = np.stack([top, bottom])[:, 2j:2j+2].ravel() + bias;  s = window.argmax()
    # y[j] = np.maximum(window[s], 0);  arg[j] = s if y[j] > 0 else (-1 - s if isnan(y[j]) else -1)
    # The bias is added before the comparisons, as in the composition (z + b can tie where z does
    # not). The first pass compares plainly, which never picks a NaN; where the row holds one, the
    # second pass does it again with argmax4, which knows NaN. (One pass that knows NaN took 1.5x
    # (argmax4) to 2x (beats) the time of this one, and made simple-cnn's fused first layer up to
    # 30% slower.)
    if _pool_row_plain(y, arg, top, bottom, bias, n):
        _pool_row_nan(y, arg, top, bottom, bias, n)


cdef inline bint _pool_row_plain(floating *y, int *arg, const floating *top,
                                 const floating *bottom, floating bias,
                                 Py_ssize_t n) noexcept nogil:
    # bias_relu_pool_row where no window holds a NaN; returns whether one may: a window's sum is
    # NaN if it holds one (inf - inf also says yes, which costs only the exact pass). Maxima and
    # selects on loaded values: no branches for random data to mispredict, and the loop
    # vectorises; the flags are 0 or 1, and integer arithmetic picks the position.
    cdef Py_ssize_t j
    cdef int right_top, right_bottom, lower, at, positive, nan = 0
    cdef floating a, b, c, d, best_top, best_bottom, best, total
    for j in range(n):
        a, b = top[2 * j] + bias, top[2 * j + 1] + bias
        c, d = bottom[2 * j] + bias, bottom[2 * j + 1] + bias
        right_top = b > a
        best_top = b if right_top else a
        right_bottom = d > c
        best_bottom = d if right_bottom else c
        lower = best_bottom > best_top
        best = best_bottom if lower else best_top
        at = right_top + lower * (2 + right_bottom - right_top)
        positive = best > <floating> 0  # (a double 0 would make the loop compare in double)
        y[j] = relu(best)
        arg[j] = positive * (at + 1) - 1  # at or -1: arithmetic (a select here became a branch)
        total = (a + b) + (c + d)
        nan = nan | (total != total)
    return nan


cdef inline void _pool_row_nan(floating *y, int *arg, const floating *top, const floating *bottom,
                               floating bias, Py_ssize_t n) noexcept nogil:
    # bias_relu_pool_row, knowing NaN. (y[j] takes the window's maximum, then its ReLU: with a
    # local variable there instead, GCC left the loop scalar.)
    cdef Py_ssize_t j
    cdef int at, positive, nan
    cdef floating best
    for j in range(n):
        at = argmax4(top[2 * j] + bias, top[2 * j + 1] + bias, bottom[2 * j] + bias,
                     bottom[2 * j + 1] + bias, &y[j])
        best = y[j]
        positive, nan = best > <floating> 0, best != best
        y[j] = relu(best)
        arg[j] = positive * (at + 1) - 1 - (at if nan else 0)  # at, -1 - at or -1


cdef inline void relu_gradient(floating *dz, const floating *dy, const floating *y,
                               Py_ssize_t n) noexcept nogil:
    # dz[:n] = dy[:n] * (y[:n] > 0)      (a product, not a branch, as _activation.relu_backward:
    # an infinite dy where y <= 0 gives NaN, as in the reference)
    cdef Py_ssize_t j
    for j in range(n):
        dz[j] = dy[j] * (y[j] > 0)


cdef inline void unpool_gradient(floating *dz, const floating *dy, const int *arg,
                                 Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    # dz (OH, OW) one plane; dy, arg (OH // 2, OW // 2), the window codes (see the top):
    # dz = 0; dz[2i + s // 2, 2j + s % 2] = dy[i, j] * (arg[i, j] >= 0), s window (i, j)'s winner
    # Every element of dz is written once, window by window (no zeroing pass first), as dy times
    # a row of 0s and 1s looked up by the code: with selects (g if s == k else 0) GCC emits a
    # switch whose branches random winners mispredict, 4-7x slower. An infinite or NaN dy times
    # 0 is NaN, where the composition has 0 but at the winner: where dy holds one, the windows
    # that have it are written again. (Asked before the loop, not after it or in it: there GCC
    # compiled the loop 1.5-2x slower.)
    cdef Py_ssize_t OH2 = OH // 2, OW2 = OW // 2, i, j, k
    cdef bint finite = all_finite(dy, OH2 * OW2)
    cdef floating pick[32]  # row code + 4 (code -4 .. 3): the four positions, 1 at s if code >= 0
    cdef const floating *w
    cdef floating g
    cdef floating *top
    cdef floating *bottom
    for k in range(32):
        pick[k] = (k % 4) == (k // 4 - 4)
    for i in range(OH2):
        top = dz + 2 * i * OW
        bottom = top + OW
        for j in range(OW2):
            g, w = dy[i * OW2 + j], pick + 4 * (arg[i * OW2 + j] + 4)
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
    if not finite:
        _unpool_nonfinite(dz, dy, arg, OH, OW)


cdef inline void _unpool_nonfinite(floating *dz, const floating *dy, const int *arg,
                                   Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    # unpool_gradient's windows whose dy is infinite or NaN, again: the winner s gets dy times 1 or 0
    # (NaN where the ReLU blocks), the three others exactly 0
    cdef Py_ssize_t OW2 = OW // 2, q, k
    cdef int code, s
    cdef floating g
    cdef floating *window
    for q in range((OH // 2) * OW2):
        g, code = dy[q], arg[q]
        if g - g == 0:  # finite: done
            continue
        s = code if code >= 0 else -1 - code
        window = dz + 2 * (q // OW2) * OW + 2 * (q % OW2)
        for k in range(4):
            window[(k // 2) * OW + k % 2] = 0
        window[(s // 2) * OW + s % 2] = g * (code >= 0)


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
