"""Winograd convolution F(2x2, 3x3) and F(4x4, 3x3) for 3x3 stride-1 layers.
Mirrors fastnn/backends/numba/conv/winograd.py (the same work units, buffers and passes: its
docstring explains the layout, with the extra tile per row) and fastnn/backends/numpy/winograd.py
(the math, and the matrices B^T, G, A^T written out). Adapter: fastnn/backends/cython/winograd.py.

With a = m + 2, positions xi = 0 .. a*a - 1 of a transformed tile, Tb tiles of a work unit:

    U[xi]  (F, C)   = G W[f, c] G^T           filters, once per call (in double)
    V[xi]  (C, Tb)  = B^T d B                 one unit's input tiles
    M[xi]  (F, Tb)  = U[xi] @ V[xi]           a*a GEMMs (BLAS, single-threaded)
    y block         = A^T M A + b
    dM[xi] (F, Tb)  = A dY A^T                dU[xi] += dM[xi] @ V[xi].T, dW = G^T dU G
    dx              = the forward pass over dy, filters rotated 180 degrees, pad 2 - pad

Threads: one OpenMP parallel region per call; thread t takes units t*n//T up to (t+1)*n//T with
its own buffers (V[t], M[t], ...); the weight gradient is summed per thread, and the parts are
added in thread order at the end.

Fused with the ReLU (and 2x2 max-pool) after it (specification: fastnn/backends/composed.py):
forward runs with the BIAS_RELU or BIAS_RELU_POOL epilogue, applied to the output transform's rows
before they are written (m is even, so a 2x2 window never straddles two tile rows and only the
pooled y reaches memory); ``backward_relu`` splits the batch by whole images, so each thread
builds its own images' gradient at z and runs the weight- and input-gradient units on it.

Loops use Py_ssize_t indices and pointers, so that the compiler vectorises them (see _conv.pyx).
Each 1-D transform reads a short vector and writes its result to o[0], o[s], o[2s], ...: s is
the distance between the rows (or positions) it fills.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastnn_ext._common cimport FASTNN_OPENMP, gemm, omp_get_max_threads
from fastnn_ext._epilogue cimport bias_relu, bias_relu_pool_row, chain_gradient

# what forward_unit does with the convolution's output (see forward)
cdef enum:
    BIAS = 0
    BIAS_RELU = 1
    BIAS_RELU_POOL = 2

EPILOGUES = {"bias": BIAS, "relu": BIAS_RELU, "relu_pool": BIAS_RELU_POOL}

OPENMP = bool(FASTNN_OPENMP)  # compiled with OpenMP; False: the serial build (_omp_shim.h)


def max_threads():
    """OpenMP's thread limit (set by fastnn.threads via threadpoolctl); 1 in the serial build."""
    return omp_get_max_threads()


# ------------------------------------------------------------------------- 1-D transforms

cdef inline void bt_2(floating *o, Py_ssize_t s, floating d0, floating d1, floating d2,
                      floating d3) noexcept nogil:
    # B^T @ d,  B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    o[0] = d0 - d2
    o[s] = d1 + d2
    o[2 * s] = d2 - d1
    o[3 * s] = d1 - d3


cdef inline void at_2(floating *o, Py_ssize_t s, floating m0, floating m1, floating m2,
                      floating m3) noexcept nogil:
    # A^T @ m,  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
    o[0] = m0 + m1 + m2
    o[s] = m1 - m2 - m3


cdef inline void a_2(floating *o, Py_ssize_t s, floating y0, floating y1) noexcept nogil:
    # A @ y (the adjoint of A^T @ m)
    o[0] = y0
    o[s] = y0 + y1
    o[2 * s] = y0 - y1
    o[3 * s] = -y1


cdef inline void bt_4(floating *o, Py_ssize_t s, floating d0, floating d1, floating d2,
                      floating d3, floating d4, floating d5) noexcept nogil:
    # B^T @ d,  B^T = [[4,  0, -5,  0, 1, 0],  [0, -4, -4,  1, 1, 0],  [0,  4, -4, -1, 1, 0],
    #                  [0, -2, -1,  2, 1, 0],  [0,  2, -1, -2, 1, 0],  [0,  4,  0, -5, 0, 1]]
    o[0] = 4 * d0 - 5 * d2 + d4
    o[s] = d3 + d4 - 4 * (d1 + d2)
    o[2 * s] = 4 * (d1 - d2) + d4 - d3
    o[3 * s] = 2 * (d3 - d1) + d4 - d2
    o[4 * s] = 2 * (d1 - d3) + d4 - d2
    o[5 * s] = 4 * d1 - 5 * d3 + d5


cdef inline void at_4(floating *o, Py_ssize_t s, floating m0, floating m1, floating m2,
                      floating m3, floating m4, floating m5) noexcept nogil:
    # A^T @ m,  A^T = [[1, 1,  1, 1,  1, 0],  [0, 1, -1, 2, -2, 0],
    #                  [0, 1,  1, 4,  4, 0],  [0, 1, -1, 8, -8, 1]]
    cdef floating p12 = m1 + m2, q12 = m1 - m2, p34 = m3 + m4, q34 = m3 - m4
    o[0] = m0 + p12 + p34
    o[s] = q12 + 2 * q34
    o[2 * s] = p12 + 4 * p34
    o[3 * s] = q12 + 8 * q34 + m5


cdef inline void a_4(floating *o, Py_ssize_t s, floating y0, floating y1, floating y2,
                     floating y3) noexcept nogil:
    # A @ y (the adjoint of A^T @ m)
    cdef floating even = y0 + y2, odd = y1 + y3, even2 = y0 + 4 * y2, odd2 = 2 * y1 + 8 * y3
    o[0] = y0
    o[s] = even + odd
    o[2 * s] = even - odd
    o[3 * s] = even2 + odd2
    o[4 * s] = even2 - odd2
    o[5 * s] = y3


cdef inline void g_m(double *o, Py_ssize_t s, int m, double g0, double g1,
                     double g2) noexcept nogil:
    # G @ g; F(2x2): G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    # F(4x4): G = [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6], [1/24, 1/12, 1/6],
    #              [1/24, -1/12, 1/6], [0, 0, 1]]
    if m == 2:
        o[0] = g0
        o[s] = 0.5 * (g0 + g1 + g2)
        o[2 * s] = 0.5 * (g0 - g1 + g2)
        o[3 * s] = g2
    else:
        o[0] = g0 / 4
        o[s] = -(g0 + g1 + g2) / 6
        o[2 * s] = -(g0 - g1 + g2) / 6
        o[3 * s] = g0 / 24 + g1 / 12 + g2 / 6
        o[4 * s] = g0 / 24 - g1 / 12 + g2 / 6
        o[5 * s] = g2


cdef inline void gt_m(double *o, Py_ssize_t s, int m, const double *u,
                      Py_ssize_t us) noexcept nogil:
    # G^T @ u (the adjoint of G @ g), u[0], u[us], ... the a entries
    if m == 2:
        o[0] = u[0] + 0.5 * (u[us] + u[2 * us])
        o[s] = 0.5 * (u[us] - u[2 * us])
        o[2 * s] = 0.5 * (u[us] + u[2 * us]) + u[3 * us]
    else:
        o[0] = u[0] / 4 - (u[us] + u[2 * us]) / 6 + (u[3 * us] + u[4 * us]) / 24
        o[s] = (u[2 * us] - u[us]) / 6 + (u[3 * us] - u[4 * us]) / 12
        o[2 * s] = (u[3 * us] + u[4 * us]) / 6 - (u[us] + u[2 * us]) / 6 + u[5 * us]


# --------------------------------------------------------------------- filter transforms

cdef void filters(floating[:, :, ::1] U, const floating[:, :, :, ::1] W, int m,
                  bint flip) noexcept nogil:
    # W (F, C, 3, 3) -> U (a*a, F, C) = G W[f, c] G^T, or, if flip, U (a*a, C, F) of the filters of
    # the input gradient, W.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]. In double.
    cdef Py_ssize_t a = m + 2, F = W.shape[0], C = W.shape[1], f, c, i, j, xi
    cdef double g[9]
    cdef double Gg[18]  # (a, 3): G @ g
    cdef double u[36]   # (a, a): (G g) G^T
    for f in range(F):
        for c in range(C):
            for i in range(3):
                for j in range(3):
                    g[3 * i + j] = W[f, c, 2 - i, 2 - j] if flip else W[f, c, i, j]
            for j in range(3):  # G @ g, column by column
                g_m(&Gg[j], 3, m, g[j], g[3 + j], g[6 + j])
            for i in range(a):  # (G g) G^T, row by row
                g_m(&u[a * i], 1, m, Gg[3 * i], Gg[3 * i + 1], Gg[3 * i + 2])
            for xi in range(a * a):
                if flip:
                    U[xi, c, f] = <floating> u[xi]
                else:
                    U[xi, f, c] = <floating> u[xi]


cdef void filters_adjoint(floating[:, :, :, ::1] dW, const floating[:, :, ::1] dU,
                          int m) noexcept nogil:
    # dU (a*a, F, C) -> dW (F, C, 3, 3) = G^T dU[:, f, c] G, in double
    cdef Py_ssize_t a = m + 2, F = dW.shape[0], C = dW.shape[1], f, c, i, j, xi
    cdef double u[36]
    cdef double Gu[18]  # (3, a): G^T @ u
    cdef double g[9]
    for f in range(F):
        for c in range(C):
            for xi in range(a * a):
                u[xi] = dU[xi, f, c]
            for j in range(a):  # G^T @ u, column by column
                gt_m(&Gu[j], a, m, &u[j], a)
            for i in range(3):  # (G^T u) G, row by row
                gt_m(&g[3 * i], 1, m, &Gu[a * i], 1)
            for i in range(3):
                for j in range(3):
                    dW[f, c, i, j] = <floating> g[3 * i + j]


# ------------------------------------------------------- tile transforms, all tiles of a unit
# T tiles side by side; tile t covers columns m*t .. m*t + a - 1 of the rows of e (a, L).

cdef inline const floating *x_row(const floating[:, :, :, ::1] x, Py_ssize_t n, Py_ssize_t c,
                                  Py_ssize_t r, const floating *zero) noexcept nogil:
    # row r of x[n, c], or zeros where r lies in the padding
    if r < 0 or r >= x.shape[2]:
        return zero
    return &x[n, c, r, 0]


cdef void input_columns(floating *e, Py_ssize_t L, const floating[:, :, :, ::1] x, Py_ssize_t c,
                        int pad, int m, Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t TH, Py_ssize_t P,
                        const floating *zero) noexcept nogil:
    # e[:, k*P + j] = B^T @ x_padded[n, c, m*th : m*th + a, j] for tile row k = (n, th) and the
    # columns j that hold x; the padding columns of e stay zero
    cdef Py_ssize_t lo = max(0, pad), hi = min(P, x.shape[3] + pad), k, n, th, r, j
    cdef const floating *x0
    cdef const floating *x1
    cdef const floating *x2
    cdef const floating *x3
    cdef const floating *x4
    cdef const floating *x5
    cdef floating *ek
    for k in range(g1 - g0):
        n, th = (g0 + k) // TH, (g0 + k) % TH
        r = m * th - pad
        x0 = x_row(x, n, c, r, zero) + (lo - pad)
        x1 = x_row(x, n, c, r + 1, zero) + (lo - pad)
        x2 = x_row(x, n, c, r + 2, zero) + (lo - pad)
        x3 = x_row(x, n, c, r + 3, zero) + (lo - pad)
        ek = e + k * P + lo
        if m == 2:
            for j in range(hi - lo):
                bt_2(ek + j, L, x0[j], x1[j], x2[j], x3[j])
        else:
            x4 = x_row(x, n, c, r + 4, zero) + (lo - pad)
            x5 = x_row(x, n, c, r + 5, zero) + (lo - pad)
            for j in range(hi - lo):
                bt_4(ek + j, L, x0[j], x1[j], x2[j], x3[j], x4[j], x5[j])


cdef void input_rows(floating *V, Py_ssize_t vs, const floating *e, Py_ssize_t L, int m,
                     Py_ssize_t T) noexcept nogil:
    # e (a, L) -> V[(i, :), t] = B^T @ e[i, m*t : m*t + a]; V points at V[0, c, 0], vs is the
    # distance between positions xi
    cdef Py_ssize_t a = m + 2, i, t
    cdef const floating *r
    for i in range(a):
        r = e + i * L
        if m == 2:
            for t in range(T):
                bt_2(V + (a * i) * vs + t, vs, r[2 * t], r[2 * t + 1], r[2 * t + 2], r[2 * t + 3])
        else:
            for t in range(T):
                bt_4(V + (a * i) * vs + t, vs, r[4 * t], r[4 * t + 1], r[4 * t + 2], r[4 * t + 3],
                     r[4 * t + 4], r[4 * t + 5])


cdef void output_tiles(floating *out, Py_ssize_t L, const floating *Mf, Py_ssize_t ms,
                       floating *s, int m, Py_ssize_t T) noexcept nogil:
    # Mf = &M[0, f, 0] (positions ms apart) -> out (m, L): out[:, m*t : m*t + m] = A^T M[:, f, t] A;
    # s (m, a, T) scratch
    cdef Py_ssize_t a = m + 2, i, j, t
    cdef const floating *si
    # s[:, j, t] = A^T @ M[(:, j), f, t]   (each column of each tile)
    for j in range(a):
        if m == 2:
            for t in range(T):
                at_2(s + j * T + t, a * T, Mf[j * ms + t], Mf[(4 + j) * ms + t],
                     Mf[(8 + j) * ms + t], Mf[(12 + j) * ms + t])
        else:
            for t in range(T):
                at_4(s + j * T + t, a * T, Mf[j * ms + t], Mf[(6 + j) * ms + t],
                     Mf[(12 + j) * ms + t], Mf[(18 + j) * ms + t], Mf[(24 + j) * ms + t],
                     Mf[(30 + j) * ms + t])
    # out[i, m*t : m*t + m] = A^T @ s[i, :, t]   (each row)
    for i in range(m):
        si = s + i * a * T
        if m == 2:
            for t in range(T):
                at_2(out + i * L + 2 * t, 1, si[t], si[T + t], si[2 * T + t], si[3 * T + t])
        else:
            for t in range(T):
                at_4(out + i * L + 4 * t, 1, si[t], si[T + t], si[2 * T + t], si[3 * T + t],
                     si[4 * T + t], si[5 * T + t])


cdef void output_adjoint_tiles(floating *dMf, Py_ssize_t ms, const floating *dyb, Py_ssize_t L,
                               floating *s, int m, Py_ssize_t T) noexcept nogil:
    # dyb (m, L) -> dMf = &dM[0, f, 0]: dM[:, f, t] = A dY A^T, dY = dyb[:, m*t : m*t + m];
    # s (m, a, T) scratch
    cdef Py_ssize_t a = m + 2, i, j, t
    cdef const floating *r
    # s[i, :, t] = A @ dY[i, :]   (each row of each block)
    for i in range(m):
        r = dyb + i * L
        if m == 2:
            for t in range(T):
                a_2(s + i * a * T + t, T, r[2 * t], r[2 * t + 1])
        else:
            for t in range(T):
                a_4(s + i * a * T + t, T, r[4 * t], r[4 * t + 1], r[4 * t + 2], r[4 * t + 3])
    # dM[(:, j), f, t] = A @ s[:, j, t]   (each column)
    for j in range(a):
        if m == 2:
            for t in range(T):
                a_2(dMf + j * ms + t, a * ms, s[j * T + t], s[(a + j) * T + t])
        else:
            for t in range(T):
                a_4(dMf + j * ms + t, a * ms, s[j * T + t], s[(a + j) * T + t],
                    s[(2 * a + j) * T + t], s[(3 * a + j) * T + t])


# ------------------------------------------------------------------------ one work unit

cdef void transform_input(floating[:, :, :, ::1] V, Py_ssize_t tid,
                          const floating[:, :, :, ::1] x, int pad, int m, Py_ssize_t g0,
                          Py_ssize_t g1, Py_ssize_t TH, Py_ssize_t TW, floating *e, Py_ssize_t L,
                          const floating *zero) noexcept nogil:
    # x (N, C, H, W) -> V[tid] (a*a, C, >= T): B^T d B for the T = (g1 - g0)*(TW + 1) tiles of tile
    # rows g0 <= g < g1 (one extra tile a row); e (a, L) scratch
    cdef Py_ssize_t a = m + 2, P = m * (TW + 1), T = (g1 - g0) * (TW + 1), c, q
    cdef Py_ssize_t vs = V.shape[2] * V.shape[3]
    for q in range(a * L):  # the padding columns and the slack: written by nothing below
        e[q] = 0
    for c in range(x.shape[1]):
        input_columns(e, L, x, c, pad, m, g0, g1, TH, P, zero)
        input_rows(&V[tid, 0, c, 0], vs, e, L, m, T)


cdef void forward_unit(floating[:, :, :, ::1] y, const floating[:, :, :, ::1] x,
                       const floating[:, :, ::1] U, const floating[::1] b, int pad, int m,
                       Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t tid, floating[:, :, :, ::1] V,
                       floating[:, :, :, ::1] M, floating[:, :, ::1] e, floating[:, ::1] s,
                       floating[:, :, ::1] out, const floating *zero, int epilogue,
                       int *arg) noexcept nogil:
    # x (N, C, H, W), U (a*a, F, C), b (F,) -> y (N, F, OH, OW) = conv + b for tile rows
    # g0 <= g < g1, with thread tid's buffers V[tid], M[tid], e[tid], s[tid], out[tid]; then, by
    # the epilogue: BIAS as it stands, BIAS_RELU relu(conv + b), BIAS_RELU_POOL y (N, F, OH//2,
    # OW//2) = maxpool2x2(relu(conv + b)) and arg, C-contiguous of y's shape, the windows'
    # winners (see _epilogue.pxd)
    cdef Py_ssize_t F = y.shape[1], C = x.shape[1]
    cdef Py_ssize_t OH = x.shape[2] + 2 * pad - 2, OW = x.shape[3] + 2 * pad - 2  # 3x3, stride 1
    cdef Py_ssize_t TH = (OH + m - 1) // m, TW = (OW + m - 1) // m, P = m * (TW + 1)
    cdef Py_ssize_t T = (g1 - g0) * (TW + 1), Tb = V.shape[3], L = out.shape[2]
    cdef Py_ssize_t xi, f, k, n, th, i, j, rows, r
    cdef floating bias
    cdef floating *dst
    cdef const floating *src
    transform_input(V, tid, x, pad, m, g0, g1, TH, TW, &e[tid, 0, 0], e.shape[2], zero)
    # M[xi] = U[xi] @ V[xi], one GEMM per position of the transformed tile
    for xi in range(U.shape[0]):
        gemm(False, False, F, T, C, <floating> 1, &U[xi, 0, 0], C, &V[tid, xi, 0, 0], Tb,
             <floating> 0, &M[tid, xi, 0, 0], Tb)
    for f in range(F):
        # out[i, k*P + j] = (A^T M A) of every tile: output row th*m + i, column j of tile row k
        output_tiles(&out[tid, 0, 0], L, &M[tid, 0, f, 0], M.shape[2] * Tb, &s[tid, 0], m, T)
        bias = b[f]
        for k in range(g1 - g0):
            n, th = (g0 + k) // TH, (g0 + k) % TH
            rows = min(m, OH - th * m)
            if epilogue == BIAS_RELU_POOL:
                # y[n, f, r], arg[n, f, r] = the pooled relu(out[i:i+2, k*P : k*P + OW] + b[f]),
                # r = (th*m + i) // 2: m is even, so no window straddles two tile rows; an odd
                # last row (i + 1 == rows) belongs to no window
                for i in range(0, rows - 1, 2):
                    r = (th * m + i) // 2
                    bias_relu_pool_row(&y[n, f, r, 0],
                                       arg + ((n * F + f) * y.shape[2] + r) * y.shape[3],
                                       &out[tid, i, k * P], &out[tid, i + 1, k * P], bias,
                                       y.shape[3])
                continue
            for i in range(rows):
                dst, src = &y[n, f, th * m + i, 0], &out[tid, i, k * P]
                if epilogue == BIAS_RELU:
                    # y[n, f, th*m + i, :] = np.maximum(out[i, k*P : k*P + OW] + b[f], 0)
                    bias_relu(dst, src, bias, OW)
                else:
                    # y[n, f, th*m + i, :] = out[i, k*P : k*P + OW] + b[f], the rows that exist
                    for j in range(OW):
                        dst[j] = src[j] + bias


cdef void weight_grad_unit(floating[:, :, :, ::1] dU, floating[:, ::1] db,
                           const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                           int pad, int m, Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t tid,
                           floating[:, :, :, ::1] V, floating[:, :, :, ::1] dM,
                           floating[:, :, ::1] e, floating[:, ::1] s, floating[:, :, ::1] dyb,
                           const floating *zero) noexcept nogil:
    # dy (N, F, OH, OW), x (N, C, H, W) -> dU[tid] (a*a, F, C) += dM @ V.T, db[tid] (F,) += the
    # sums of dy, for tile rows g0 <= g < g1
    cdef Py_ssize_t F = dy.shape[1], OH = dy.shape[2], OW = dy.shape[3], C = x.shape[1]
    cdef Py_ssize_t TH = (OH + m - 1) // m, TW = (OW + m - 1) // m, P = m * (TW + 1)
    cdef Py_ssize_t T = (g1 - g0) * (TW + 1), Tb = V.shape[3], L = dyb.shape[2]
    cdef Py_ssize_t xi, f, k, n, th, i, j
    cdef floating acc
    cdef floating *dst
    cdef const floating *src
    transform_input(V, tid, x, pad, m, g0, g1, TH, TW, &e[tid, 0, 0], e.shape[2], zero)
    for f in range(F):
        # dyb[i, k*P + j] = dy[n, f, th*m + i, j], zero past the ragged edge and in the extra
        # tile (so that it adds nothing); db[f] += the sum
        acc = 0
        for k in range(g1 - g0):
            n, th = (g0 + k) // TH, (g0 + k) % TH
            for i in range(m):
                dst = &dyb[tid, i, k * P]
                if th * m + i >= OH:
                    for j in range(P):
                        dst[j] = 0
                    continue
                src = &dy[n, f, th * m + i, 0]
                for j in range(OW):
                    dst[j] = src[j]
                    acc = acc + src[j]
                for j in range(OW, P):
                    dst[j] = 0
        db[tid, f] += acc
        # dM[:, f, t] = A dY A^T
        output_adjoint_tiles(&dM[tid, 0, f, 0], dM.shape[2] * Tb, &dyb[tid, 0, 0], L, &s[tid, 0],
                             m, T)
    # dU[xi] += dM[xi] @ V[xi].T
    for xi in range(dU.shape[1]):
        gemm(False, True, F, C, T, <floating> 1, &dM[tid, xi, 0, 0], Tb, &V[tid, xi, 0, 0], Tb,
             <floating> 1, &dU[tid, xi, 0, 0], C)


# ----------------------------------------------------------------------- the entry points

def forward(floating[:, :, :, ::1] y, const floating[:, :, :, ::1] x,
            const floating[:, :, :, ::1] W, const floating[::1] b, int pad, int m, Py_ssize_t R,
            const floating[::1] zero, floating[:, :, ::1] U, floating[:, :, :, ::1] V,
            floating[:, :, :, ::1] M, floating[:, :, ::1] e, floating[:, ::1] s,
            floating[:, :, ::1] out, int epilogue=BIAS, int[:, :, :, ::1] arg=None):
    # x (N, C, H, W), W (F, C, 3, 3), b (F,) -> y (N, F, OH, OW); R tile rows per unit; zero (W,)
    # zeros; U (a*a, F, C) filled here; V, M, e, s, out: one buffer per thread (leading axis).
    # epilogue (EPILOGUES): BIAS y = conv + b; BIAS_RELU y = relu(conv + b); BIAS_RELU_POOL
    # y (N, F, OH//2, OW//2) = maxpool2x2(relu(conv + b)) and arg (N, F, OH//2, OW//2) the
    # windows' winners (_epilogue.pxd): the full convolution output is never written.
    cdef Py_ssize_t OH = x.shape[2] + 2 * pad - 2
    cdef Py_ssize_t n_rows = x.shape[0] * ((OH + m - 1) // m)  # tile rows of the batch
    cdef Py_ssize_t n_units = (n_rows + R - 1) // R, T = V.shape[0], t, u
    cdef int *arg0 = NULL
    if epilogue == BIAS_RELU_POOL:
        if arg is None or any(arg.shape[i] != y.shape[i] for i in range(4)):
            raise ValueError("the pooling epilogue needs arg, shaped as y")
        if y.shape[2] == 0 or y.shape[3] == 0:
            return
        arg0 = &arg[0, 0, 0, 0]
    with nogil:
        filters(U, W, m, False)
    for t in prange(T, nogil=True, num_threads=T, schedule="static"):
        for u in range(t * n_units // T, (t + 1) * n_units // T):
            forward_unit(y, x, U, b, pad, m, u * R, min(n_rows, (u + 1) * R), t, V, M, e, s, out,
                         &zero[0], epilogue, arg0)


def backward(floating[:, :, :, ::1] dW, floating[::1] db, floating[:, :, :, ::1] dx,
             const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
             const floating[:, :, :, ::1] W, int pad, int m, Py_ssize_t R, Py_ssize_t Rx,
             bint need_dx, const floating[::1] zero, floating[:, :, :, ::1] dU_parts,
             floating[:, ::1] db_parts, floating[:, :, :, ::1] V, floating[:, :, :, ::1] dM,
             floating[:, :, ::1] e, floating[:, ::1] s, floating[:, :, ::1] dyb,
             floating[:, :, ::1] Uf, const floating[::1] zero_bias, floating[:, :, :, ::1] Vx,
             floating[:, :, :, ::1] Mx, floating[:, :, ::1] e_x, floating[:, ::1] s_x,
             floating[:, :, ::1] out_x):
    # dy (N, F, OH, OW), x (N, C, H, W), W (F, C, 3, 3) -> dW (F, C, 3, 3), db (F,), and dx
    # (N, C, H, W) if need_dx. Per thread: dU_parts (T, a*a, F, C), db_parts (T, F), the buffers
    # of the weight-gradient units (V .. dyb, R tile rows each) and of the input-gradient units
    # (Vx .. out_x, Rx tile rows each); Uf (a*a, C, F) filled here.
    cdef Py_ssize_t n_rows = x.shape[0] * ((dy.shape[2] + m - 1) // m)
    cdef Py_ssize_t n_units = (n_rows + R - 1) // R
    cdef Py_ssize_t n_rows_x = x.shape[0] * ((x.shape[2] + m - 1) // m)
    cdef Py_ssize_t n_units_x = (n_rows_x + Rx - 1) // Rx
    cdef Py_ssize_t T = V.shape[0], t, u, i, f, c
    dU_parts[:] = 0
    db_parts[:] = 0
    with nogil:
        if need_dx:
            filters(Uf, W, m, True)
    for t in prange(T, nogil=True, num_threads=T, schedule="static"):
        for u in range(t * n_units // T, (t + 1) * n_units // T):
            weight_grad_unit(dU_parts, db_parts, dy, x, pad, m, u * R, min(n_rows, (u + 1) * R), t,
                             V, dM, e, s, dyb, &zero[0])
        if need_dx:
            # dx = conv(dy, W flipped, pad 2 - pad): the forward units over dx's tiles
            for u in range(t * n_units_x // T, (t + 1) * n_units_x // T):
                forward_unit(dx, dy, Uf, zero_bias, 2 - pad, m, u * Rx, min(n_rows_x, (u + 1) * Rx),
                             t, Vx, Mx, e_x, s_x, out_x, &zero[0], BIAS, NULL)
    with nogil:
        sum_weight_gradient(dW, db, dU_parts, db_parts, m)


cdef void sum_weight_gradient(floating[:, :, :, ::1] dW, floating[::1] db,
                              floating[:, :, :, ::1] dU_parts, floating[:, ::1] db_parts,
                              int m) noexcept nogil:
    # dU = dU_parts.sum(0), db = db_parts.sum(0), in thread order; dW = G^T dU G
    cdef Py_ssize_t T = dU_parts.shape[0], t, i, f, c
    for t in range(1, T):
        for i in range(dU_parts.shape[1]):
            for f in range(dU_parts.shape[2]):
                for c in range(dU_parts.shape[3]):
                    dU_parts[0, i, f, c] += dU_parts[t, i, f, c]
        for f in range(db_parts.shape[1]):
            db_parts[0, f] += db_parts[t, f]
    for f in range(db.shape[0]):
        db[f] = db_parts[0, f]
    filters_adjoint(dW, dU_parts[0], m)


# ------------------------------------------------- fused: convolution + bias + ReLU (+ pool)
# Forward is ``forward`` with its BIAS_RELU or BIAS_RELU_POOL epilogue. Backward splits the
# batch by whole images: thread t takes groups of G images, builds their gradient at z into its
# own dz[t] (G images: sized with the units' buffers, about L2), then runs the weight-gradient
# units and the input-gradient units (the forward units over dz) of those images on it. No
# thread reads another's dz, so one parallel region needs no barrier.

def backward_relu(floating[:, :, :, ::1] dW, floating[::1] db, floating[:, :, :, ::1] dx,
                  const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] y,
                  const int[:, :, :, ::1] arg, const floating[:, :, :, ::1] x,
                  const floating[:, :, :, ::1] W, int pad, int m, Py_ssize_t G, Py_ssize_t R,
                  Py_ssize_t Rx, bint need_dx, const floating[::1] zero,
                  floating[:, :, :, :, ::1] dz, floating[:, :, :, ::1] dU_parts,
                  floating[:, ::1] db_parts, floating[:, :, :, ::1] V, floating[:, :, :, ::1] dM,
                  floating[:, :, ::1] e, floating[:, ::1] s, floating[:, :, ::1] dyb,
                  floating[:, :, ::1] Uf, const floating[::1] zero_bias,
                  floating[:, :, :, ::1] Vx, floating[:, :, :, ::1] Mx, floating[:, :, ::1] e_x,
                  floating[:, ::1] s_x, floating[:, :, ::1] out_x):
    # The backward pass of conv + ReLU, or of conv + ReLU + pool:
    #   conv + ReLU:        dy (N, F, OH, OW), y (N, F, OH, OW) the forward output, arg empty
    #   conv + ReLU + pool: dy (N, F, OH//2, OW//2), arg (N, F, OH//2, OW//2), y empty
    # x (N, C, H, W), W (F, C, 3, 3) -> dW (F, C, 3, 3), db (F,), and dx (N, C, H, W) if need_dx.
    # Per thread: dz (T, G, F, OH, OW) G images' gradient at z, and the buffers of ``backward``
    # (R tile rows per weight-gradient unit, Rx per input-gradient unit); zero as wide as x's and
    # z's rows; Uf (a*a, C, F) filled here.
    cdef Py_ssize_t N = x.shape[0], T = V.shape[0], t, grp
    cdef Py_ssize_t n_groups = (N + G - 1) // G
    cdef const floating *y0 = &y[0, 0, 0, 0] if y.shape[0] > 0 else NULL
    cdef const int *arg0 = &arg[0, 0, 0, 0] if arg.shape[0] > 0 else NULL
    dU_parts[:] = 0
    db_parts[:] = 0
    with nogil:
        if need_dx:
            filters(Uf, W, m, True)
    for t in prange(T, nogil=True, num_threads=T, schedule="static"):
        for grp in range(t * n_groups // T, (t + 1) * n_groups // T):
            backward_relu_group(dU_parts, db_parts, dx, dy, y0, arg0, x, pad, m, grp * G,
                                min(N, (grp + 1) * G), R, Rx, need_dx, &zero[0], t, dz, V, dM, e,
                                s, dyb, Uf, zero_bias, Vx, Mx, e_x, s_x, out_x)
    with nogil:
        sum_weight_gradient(dW, db, dU_parts, db_parts, m)


cdef void backward_relu_group(floating[:, :, :, ::1] dU_parts, floating[:, ::1] db_parts,
                              floating[:, :, :, ::1] dx, const floating[:, :, :, ::1] dy,
                              const floating *y0, const int *arg0,
                              const floating[:, :, :, ::1] x, int pad, int m, Py_ssize_t n0,
                              Py_ssize_t n1, Py_ssize_t R, Py_ssize_t Rx, bint need_dx,
                              const floating *zero, Py_ssize_t t, floating[:, :, :, :, ::1] dz,
                              floating[:, :, :, ::1] V, floating[:, :, :, ::1] dM,
                              floating[:, :, ::1] e, floating[:, ::1] s, floating[:, :, ::1] dyb,
                              floating[:, :, ::1] Uf, const floating[::1] zero_bias,
                              floating[:, :, :, ::1] Vx, floating[:, :, :, ::1] Mx,
                              floating[:, :, ::1] e_x, floating[:, ::1] s_x,
                              floating[:, :, ::1] out_x) noexcept nogil:
    # images n0 <= n < n1, thread t: dz[t] = their gradient at z; dU_parts[t], db_parts[t] += their
    # weight gradient; dx[n0:n1] = their input gradient if need_dx
    cdef Py_ssize_t F = dz.shape[2], OH = dz.shape[3], OW = dz.shape[4], H = x.shape[2]
    cdef Py_ssize_t TH = (OH + m - 1) // m, THx = (H + m - 1) // m, k = n1 - n0, n, u
    cdef Py_ssize_t dy_image = F * dy.shape[2] * dy.shape[3]
    cdef floating[:, :, :, ::1] dz_g
    cdef floating[:, :, :, ::1] dx_g
    for n in range(n0, n1):
        # dz[t, n - n0] = dy[n] * (y[n] > 0), or dy[n] unpooled to its windows' winners
        chain_gradient(&dz[t, n - n0, 0, 0, 0], &dy[n, 0, 0, 0],
                       y0 + n * dy_image if arg0 == NULL else NULL,
                       arg0 + n * dy_image if arg0 != NULL else NULL, F, OH, OW)
    dz_g = dz[t, :k]
    for u in range((k * TH + R - 1) // R):
        weight_grad_unit(dU_parts, db_parts, dz_g, x[n0:n1], pad, m, u * R,
                         min(k * TH, (u + 1) * R), t, V, dM, e, s, dyb, zero)
    if need_dx:
        # dx[n0:n1] = conv(dz_g, W flipped, pad 2 - pad): the forward units over dx's tiles
        dx_g = dx[n0:n1]
        for u in range((k * THx + Rx - 1) // Rx):
            forward_unit(dx_g, dz_g, Uf, zero_bias, 2 - pad, m, u * Rx, min(k * THx, (u + 1) * Rx),
                         t, Vx, Mx, e_x, s_x, out_x, zero, BIAS, NULL)
