"""Winograd convolution F(2x2, 3x3) (and F(4x4, 3x3)) with Numba, for 3x3 stride-1 layers.
Mirrors fastnn/backends/numpy/winograd.py, which writes out the math and the matrices B^T,
G, A^T: read it first. The Cython twin is fastnn_ext/_winograd.pyx.

With a = m + 2 (4 for F(2x2, 3x3)), positions xi = 0 .. a*a - 1 of a transformed tile, and
tiles of m x m outputs:

    U[xi]  (F, C)   = G W[f, c] G^T           the filters, transformed once per call
    V[xi]  (C, Tb)  = B^T d B                 a group of Tb input tiles, transformed
    M[xi]  (F, Tb)  = U[xi] @ V[xi]           a*a sgemm calls (fastnn/backends/numba/blas.py)
    y block         = A^T M A + b             cropped where OH or OW is not a multiple of m

    dx = the same forward pass over dy, with U of the filters rotated 180 degrees, channels
         swapped, and pad 2 - pad
    dM[xi] (F, Tb)  = A dY A^T                the adjoint of the output transform
    dU[xi] (F, C)  += dM[xi] @ V[xi].T        summed per thread, the parts added at the end
    dW              = G^T dU G                db = dy.sum((0, 2, 3))

How the work is cut. A "tile row" is the TW tiles side by side across one image's width;
the tile rows of the batch are numbered g = n*TH + th. A work unit is R consecutive tile
rows (several small images, or a band of a large one) whose V and M (a*a * (C + F) floats
a tile) fit in about L2_BYTES: the transform writes V, the sgemm reads it and writes M, the
output transform reads M, all within the core's L2 cache. Nothing whole-batch is transformed.

Threads: one parallel region per call. Each of the n_threads threads takes an even,
contiguous share of the units, with its own buffers (scratch, reused from call to call)
and a single-threaded sgemm. The backward pass runs both of its jobs (dW's units, then dx's)
in the same region; the weight gradient is summed per thread and the parts are added in
thread order at the end, so dW depends on n_threads only through float32 rounding.

The transforms, and the one extra tile per row. Each 2-D transform is two 1-D passes
(B^T d B = (B^T d) B), each one loop over all the tiles of a unit, so that it vectorises (a tile
row alone, 4 to 14 tiles, is shorter than one AVX-512 vector):

1. down the columns: ``e[:, k*P + j] = B^T @ x_padded[n, c, th*m : th*m + a, j]`` for tile row
   k = (n, th), read straight from x (the padding columns of e stay zero);
2. along the rows: ``V[(i, :), c, t] = B^T @ e[i, m*t : m*t + a]``.

With the row pitch P = m*(TW + 1), tile t of the unit starts at column m*t of e, for every t.
The price is tile TW of each row (t = k*(TW + 1) + TW), which reads the row's last two columns
and the next row's first ones: it is transformed and multiplied like the others (1/(TW + 1) of
the work) and its outputs are thrown away; in the weight gradient its dY is zero, so it adds
nothing. The output transform and its adjoint work the same way on the rows of ``out`` / ``dyb``.

``_bt_2``, ``_at_2``, ... are the 1-D transforms (a matrix times a short vector) written out,
zeros skipped.
"""

import numpy as np
from numba import njit, prange

from .._common import FAST, PRANGE, scratch
from ..blas import gemm
from .epilogue import PLAIN, RELU, RELU_POOL, bias_relu_row, pool_image, relu_mask_row, unpool_image

L2_BYTES = 512 * 1024  # V + M of one work unit (the cores here have 2 MB of L2 each)


# ---------------------------------------------------------------- 1-D transforms, m = 2
# B^T, G, A^T of F(2x2, 3x3) as in fastnn/backends/numpy/winograd.py; A = (A^T).T

@njit(cache=True, fastmath=FAST)
def _bt_2(d0, d1, d2, d3):
    # B^T @ d,  B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(cache=True, fastmath=FAST)
def _at_2(m0, m1, m2, m3):
    # A^T @ m,  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
    return m0 + m1 + m2, m1 - m2 - m3


@njit(cache=True, fastmath=FAST)
def _a_2(y0, y1):
    # A @ y (the adjoint of A^T @ m)
    return y0, y0 + y1, y0 - y1, -y1


@njit(cache=True)
def _g_2(g0, g1, g2):
    # G @ g,  G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    return g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2


@njit(cache=True)
def _gt_2(u0, u1, u2, u3):
    # G^T @ u (the adjoint of G @ g)
    return u0 + 0.5 * (u1 + u2), 0.5 * (u1 - u2), 0.5 * (u1 + u2) + u3


# ---------------------------------------------------------------- 1-D transforms, m = 4

# float32 constants: a float64 literal (4.0 * d) would turn the float32 arithmetic into float64
_2, _4, _5, _8 = np.float32(2.0), np.float32(4.0), np.float32(5.0), np.float32(8.0)


@njit(cache=True, fastmath=FAST)
def _bt_4(d0, d1, d2, d3, d4, d5):
    # B^T @ d,  B^T = [[4,  0, -5,  0, 1, 0],  [0, -4, -4,  1, 1, 0],  [0,  4, -4, -1, 1, 0],
    #                  [0, -2, -1,  2, 1, 0],  [0,  2, -1, -2, 1, 0],  [0,  4,  0, -5, 0, 1]]
    return (_4 * d0 - _5 * d2 + d4,
            d3 + d4 - _4 * (d1 + d2),
            _4 * (d1 - d2) + d4 - d3,
            _2 * (d3 - d1) + d4 - d2,
            _2 * (d1 - d3) + d4 - d2,
            _4 * d1 - _5 * d3 + d5)


@njit(cache=True, fastmath=FAST)
def _at_4(m0, m1, m2, m3, m4, m5):
    # A^T @ m,  A^T = [[1, 1,  1, 1,  1, 0],  [0, 1, -1, 2, -2, 0],
    #                  [0, 1,  1, 4,  4, 0],  [0, 1, -1, 8, -8, 1]]
    p12, q12, p34, q34 = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    return m0 + p12 + p34, q12 + _2 * q34, p12 + _4 * p34, q12 + _8 * q34 + m5


@njit(cache=True, fastmath=FAST)
def _a_4(y0, y1, y2, y3):
    # A @ y (the adjoint of A^T @ m)
    even, odd = y0 + y2, y1 + y3
    even2, odd2 = y0 + _4 * y2, _2 * y1 + _8 * y3
    return y0, even + odd, even - odd, even2 + odd2, even2 - odd2, y3


@njit(cache=True)
def _g_4(g0, g1, g2):
    # G @ g,  G = [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6],
    #              [1/24, 1/12, 1/6], [1/24, -1/12, 1/6], [0, 0, 1]]
    return (g0 / 4.0, -(g0 + g1 + g2) / 6.0, -(g0 - g1 + g2) / 6.0,
            g0 / 24.0 + g1 / 12.0 + g2 / 6.0, g0 / 24.0 - g1 / 12.0 + g2 / 6.0, g2)


@njit(cache=True)
def _gt_4(u0, u1, u2, u3, u4, u5):
    # G^T @ u (the adjoint of G @ g)
    return (u0 / 4.0 - (u1 + u2) / 6.0 + (u3 + u4) / 24.0,
            (u2 - u1) / 6.0 + (u3 - u4) / 12.0,
            (u3 + u4) / 6.0 - (u1 + u2) / 6.0 + u5)


# ------------------------------------------------------------------- filter transforms

@njit(cache=True)
def _filters(U, W, m, flip):
    # W (F, C, 3, 3) -> U (a*a, F, C) = G W[f, c] G^T, or, if flip, U (a*a, C, F) of the filters
    # of the input gradient, W.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]. float64 inside.
    a = m + 2
    F, C = W.shape[0], W.shape[1]
    g = np.empty((3, 3))
    Gg = np.empty((a, 3))  # G @ g, column by column
    for f in range(F):
        for c in range(C):
            for i in range(3):
                for j in range(3):
                    g[i, j] = W[f, c, 2 - i, 2 - j] if flip else W[f, c, i, j]
            for j in range(3):
                if m == 2:
                    Gg[0, j], Gg[1, j], Gg[2, j], Gg[3, j] = _g_2(g[0, j], g[1, j], g[2, j])
                else:
                    Gg[0, j], Gg[1, j], Gg[2, j], Gg[3, j], Gg[4, j], Gg[5, j] = \
                        _g_4(g[0, j], g[1, j], g[2, j])
            # (G g) G^T, row by row: U[i*a + j] = (G @ Gg[i])[j]
            o, p = (f, c) if not flip else (c, f)
            for i in range(a):
                if m == 2:
                    U[i * a, o, p], U[i * a + 1, o, p], U[i * a + 2, o, p], U[i * a + 3, o, p] = \
                        _g_2(Gg[i, 0], Gg[i, 1], Gg[i, 2])
                else:
                    (U[i * a, o, p], U[i * a + 1, o, p], U[i * a + 2, o, p], U[i * a + 3, o, p],
                     U[i * a + 4, o, p], U[i * a + 5, o, p]) = _g_4(Gg[i, 0], Gg[i, 1], Gg[i, 2])


@njit(cache=True)
def _filters_adjoint(dW, dU, m):
    # dU (a*a, F, C) -> dW (F, C, 3, 3) = G^T dU[:, f, c] G, float64 inside
    a = m + 2
    F, C = dW.shape[0], dW.shape[1]
    u = np.empty((a, a))
    Gu = np.empty((3, a))  # G^T @ u, column by column
    for f in range(F):
        for c in range(C):
            for xi in range(a * a):
                u[xi // a, xi % a] = dU[xi, f, c]
            for j in range(a):
                if m == 2:
                    Gu[0, j], Gu[1, j], Gu[2, j] = _gt_2(u[0, j], u[1, j], u[2, j], u[3, j])
                else:
                    Gu[0, j], Gu[1, j], Gu[2, j] = _gt_4(u[0, j], u[1, j], u[2, j], u[3, j],
                                                         u[4, j], u[5, j])
            # (G^T u) G, row by row
            for i in range(3):
                if m == 2:
                    dW[f, c, i, 0], dW[f, c, i, 1], dW[f, c, i, 2] = \
                        _gt_2(Gu[i, 0], Gu[i, 1], Gu[i, 2], Gu[i, 3])
                else:
                    dW[f, c, i, 0], dW[f, c, i, 1], dW[f, c, i, 2] = \
                        _gt_4(Gu[i, 0], Gu[i, 1], Gu[i, 2], Gu[i, 3], Gu[i, 4], Gu[i, 5])


# --------------------------------------------------- tile transforms, all tiles of a unit
# A unit's T tiles side by side: tile t = k*(TW + 1) + tw covers columns m*t .. m*t + a - 1 of
# the rows e (a, m*T + a - m) (see the module docstring); s: scratch between two 1-D passes.

@njit(cache=True)
def _x_row(x, n, c, r, lo, hi, pad, zero):
    # x[n, c, r, lo - pad : hi - pad], or zeros where row r lies in the padding
    if r < 0 or r >= x.shape[2]:
        return zero[:hi - lo]
    return x[n, c, r, lo - pad:hi - pad]


@njit(cache=True, fastmath=FAST)
def _input_columns_2(e, x, c, pad, g0, g1, TH, P, zero):
    # e[:, k*P + j] = B^T @ x_padded[n, c, 2*th : 2*th + 4, j] for tile row k = (n, th) and the
    # columns j that hold x; the padding columns of e stay zero
    lo, hi = max(0, pad), min(P, x.shape[3] + pad)
    for k in range(g1 - g0):
        n, th = (g0 + k) // TH, (g0 + k) % TH
        r = 2 * th - pad
        x0 = _x_row(x, n, c, r, lo, hi, pad, zero)
        x1 = _x_row(x, n, c, r + 1, lo, hi, pad, zero)
        x2 = _x_row(x, n, c, r + 2, lo, hi, pad, zero)
        x3 = _x_row(x, n, c, r + 3, lo, hi, pad, zero)
        ek = e[:, k * P + lo:k * P + hi]
        for j in range(hi - lo):
            ek[0, j], ek[1, j], ek[2, j], ek[3, j] = _bt_2(x0[j], x1[j], x2[j], x3[j])


@njit(cache=True, fastmath=FAST)
def _input_columns_4(e, x, c, pad, g0, g1, TH, P, zero):
    # e[:, k*P + j] = B^T @ x_padded[n, c, 4*th : 4*th + 6, j], as _input_columns_2
    lo, hi = max(0, pad), min(P, x.shape[3] + pad)
    for k in range(g1 - g0):
        n, th = (g0 + k) // TH, (g0 + k) % TH
        r = 4 * th - pad
        x0 = _x_row(x, n, c, r, lo, hi, pad, zero)
        x1 = _x_row(x, n, c, r + 1, lo, hi, pad, zero)
        x2 = _x_row(x, n, c, r + 2, lo, hi, pad, zero)
        x3 = _x_row(x, n, c, r + 3, lo, hi, pad, zero)
        x4 = _x_row(x, n, c, r + 4, lo, hi, pad, zero)
        x5 = _x_row(x, n, c, r + 5, lo, hi, pad, zero)
        ek = e[:, k * P + lo:k * P + hi]
        for j in range(hi - lo):
            ek[0, j], ek[1, j], ek[2, j], ek[3, j], ek[4, j], ek[5, j] = \
                _bt_4(x0[j], x1[j], x2[j], x3[j], x4[j], x5[j])


@njit(cache=True, fastmath=FAST)
def _input_rows_2(V, c, e, T):
    # e (4, 2*T + 2) -> V[:, c, :T]: V[(i, :), c, t] = B^T @ e[i, 2*t : 2*t + 4]  (each tile's rows)
    for i in range(4):
        r = e[i]
        for t in range(T):
            k = 2 * t
            V[4 * i, c, t], V[4 * i + 1, c, t], V[4 * i + 2, c, t], V[4 * i + 3, c, t] = \
                _bt_2(r[k], r[k + 1], r[k + 2], r[k + 3])


@njit(cache=True, fastmath=FAST)
def _input_rows_4(V, c, e, w, T):
    # e (6, 4*T + 2) -> V[:, c, :T]: V[(i, :), c, t] = B^T @ e[i, 4*t : 4*t + 6]; the six results
    # go to w (6, T) first and are then copied to V's rows: six output arrays in one loop would
    # need more run-time overlap checks than LLVM makes, and the loop would not vectorise
    for i in range(6):
        r = e[i]
        for t in range(T):
            k = 4 * t
            w[0, t], w[1, t], w[2, t], w[3, t], w[4, t], w[5, t] = \
                _bt_4(r[k], r[k + 1], r[k + 2], r[k + 3], r[k + 4], r[k + 5])
        for j in range(6):
            dst, src = V[6 * i + j, c], w[j]
            for t in range(T):
                dst[t] = src[t]


@njit(cache=True, fastmath=FAST)
def _output_pass_2(out, M, f, s, T):
    # M[:, f, :T] -> out (2, 2*T): out[:, 2*t : 2*t + 2] = A^T M[:, f, t] A
    # s[:, j, t] = A^T @ M[(:, j), f, t]   (each column of each tile)
    for j in range(4):
        for t in range(T):
            s[0, j, t], s[1, j, t] = _at_2(M[j, f, t], M[4 + j, f, t], M[8 + j, f, t],
                                           M[12 + j, f, t])
    # out[i, 2*t : 2*t + 2] = A^T @ s[i, :, t]   (each row)
    for i in range(2):
        o, si = out[i], s[i]
        for t in range(T):
            o[2 * t], o[2 * t + 1] = _at_2(si[0, t], si[1, t], si[2, t], si[3, t])


@njit(cache=True, fastmath=FAST)
def _output_pass_4(out, M, f, s, T):
    # M[:, f, :T] -> out (4, 4*T): out[:, 4*t : 4*t + 4] = A^T M[:, f, t] A
    for j in range(6):
        for t in range(T):
            s[0, j, t], s[1, j, t], s[2, j, t], s[3, j, t] = \
                _at_4(M[j, f, t], M[6 + j, f, t], M[12 + j, f, t], M[18 + j, f, t],
                      M[24 + j, f, t], M[30 + j, f, t])
    for i in range(4):
        o, si = out[i], s[i]
        for t in range(T):
            k = 4 * t
            o[k], o[k + 1], o[k + 2], o[k + 3] = _at_4(si[0, t], si[1, t], si[2, t], si[3, t],
                                                       si[4, t], si[5, t])


@njit(cache=True, fastmath=FAST)
def _output_adjoint_pass_2(dM, f, dyb, s, T):
    # dyb (2, 2*T) -> dM[:, f, :T] = A dY A^T, dY = dyb[:, 2*t : 2*t + 2]
    # s[i, :, t] = A @ dY[i, :]   (each row of each block)
    for i in range(2):
        r, si = dyb[i], s[i]
        for t in range(T):
            si[0, t], si[1, t], si[2, t], si[3, t] = _a_2(r[2 * t], r[2 * t + 1])
    # dM[(:, j), f, t] = A @ s[:, j, t]   (each column)
    for j in range(4):
        for t in range(T):
            dM[j, f, t], dM[4 + j, f, t], dM[8 + j, f, t], dM[12 + j, f, t] = \
                _a_2(s[0, j, t], s[1, j, t])


@njit(cache=True, fastmath=FAST)
def _output_adjoint_pass_4(dM, f, dyb, s, T):
    # dyb (4, 4*T) -> dM[:, f, :T] = A dY A^T, dY = dyb[:, 4*t : 4*t + 4]
    for i in range(4):
        r, si = dyb[i], s[i]
        for t in range(T):
            k = 4 * t
            si[0, t], si[1, t], si[2, t], si[3, t], si[4, t], si[5, t] = \
                _a_4(r[k], r[k + 1], r[k + 2], r[k + 3])
    for j in range(6):
        for t in range(T):
            (dM[j, f, t], dM[6 + j, f, t], dM[12 + j, f, t], dM[18 + j, f, t], dM[24 + j, f, t],
             dM[30 + j, f, t]) = _a_4(s[0, j, t], s[1, j, t], s[2, j, t], s[3, j, t])


# ------------------------------------------------------------------ one work unit

@njit(cache=True, fastmath=FAST)
def _transform_input(V, x, pad, m, g0, g1, TH, TW, e, s, zero):
    # x (N, C, H, W) -> V (a*a, C, >= T): B^T d B for the T = (g1 - g0)*(TW + 1) tiles of tile
    # rows g0 <= g < g1 (one extra tile a row, see the module docstring); zero (>= W,) zeros
    P, T = m * (TW + 1), (g1 - g0) * (TW + 1)
    e[:] = 0.0  # the padding columns and the slack: written by nothing below
    for c in range(x.shape[1]):
        # B^T d B: first down the columns (B^T d), then along each tile's rows ((B^T d) B)
        if m == 2:
            _input_columns_2(e, x, c, pad, g0, g1, TH, P, zero)
            _input_rows_2(V, c, e, T)
        else:
            _input_columns_4(e, x, c, pad, g0, g1, TH, P, zero)
            _input_rows_4(V, c, e, s[0], T)


@njit(cache=True, fastmath=FAST)
def _forward_unit(y, arg, x, U, b, pad, m, g0, g1, V, M, e, s, out, zero, post):
    # x (N, C, H, W), U (a*a, F, C), b (F,) -> y (N, F, OH, OW) for tile rows g0 <= g < g1;
    # post RELU: relu(y); RELU_POOL: y (N, F, OH // 2, OW // 2) = maxpool2x2(relu(conv)) and its
    # argmax, from the tile rows in cache (m is even, so no 2x2 window straddles two tile rows)
    F = U.shape[1]
    OH, OW = x.shape[2] + 2 * pad - 2, x.shape[3] + 2 * pad - 2
    TH, TW = (OH + m - 1) // m, (OW + m - 1) // m
    P, T = m * (TW + 1), (g1 - g0) * (TW + 1)
    _transform_input(V, x, pad, m, g0, g1, TH, TW, e, s, zero)
    # M[xi] = U[xi] @ V[xi], one sgemm per position of the transformed tile
    for xi in range(U.shape[0]):
        gemm(M[xi, :, :T], U[xi], V[xi, :, :T])
    for f in range(F):
        # out[i, k*P + j] = (A^T M A) of every tile: output row th*m + i, column j of tile row k
        if m == 2:
            _output_pass_2(out, M, f, s, T)
        else:
            _output_pass_4(out, M, f, s, T)
        bias = b[f]
        for k in range(g1 - g0):
            n, th = (g0 + k) // TH, (g0 + k) % TH
            if post == RELU_POOL:
                # the pooled rows of output rows th*m .. th*m + m - 1 (an odd OH's last row has none)
                ph0, ph1 = th * m // 2, min((th + 1) * m, OH) // 2
                pool_image(y[n, f:f + 1, ph0:ph1], arg[n, f:f + 1, ph0:ph1], out.reshape(out.size)[k * P:],
                           out.shape[1], m, b[f:f + 1])
            else:
                # y[n, f, th*m + i, :] = out[i, k*P : k*P + OW] + b[f] (then ReLU), the rows that exist
                for i in range(min(m, OH - th * m)):
                    bias_relu_row(y[n, f, th * m + i], out[i, k * P:k * P + OW], bias, post == RELU)


@njit(cache=True, fastmath=FAST)
def _weight_grad_unit(dU, db, dy, x, pad, m, g0, g1, V, dM, e, s, dyb, zero):
    # dy (N, F, OH, OW), x (N, C, H, W) -> dU (a*a, F, C) += dM @ V.T, db (F,) += dy sums,
    # for tile rows g0 <= g < g1
    F, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    TH, TW = (OH + m - 1) // m, (OW + m - 1) // m
    P, T = m * (TW + 1), (g1 - g0) * (TW + 1)
    _transform_input(V, x, pad, m, g0, g1, TH, TW, e, s, zero)
    for f in range(F):
        # dyb[i, k*P + j] = dy[n, f, th*m + i, j], zero past the ragged edge and in the extra
        # tile (so that it adds nothing); db[f] += the sum
        acc = np.float32(0.0)
        for k in range(g1 - g0):
            n, th = (g0 + k) // TH, (g0 + k) % TH
            for i in range(m):
                dst = dyb[i, k * P:(k + 1) * P]
                if th * m + i >= OH:
                    dst[:] = 0.0
                    continue
                src = dy[n, f, th * m + i]
                for j in range(OW):
                    dst[j] = src[j]
                    acc += src[j]
                for j in range(OW, P):
                    dst[j] = 0.0
        db[f] += acc
        # dM[:, f, t] = A dY A^T
        if m == 2:
            _output_adjoint_pass_2(dM, f, dyb, s, T)
        else:
            _output_adjoint_pass_4(dM, f, dyb, s, T)
    # dU[xi] += dM[xi] @ V[xi].T
    for xi in range(dU.shape[0]):
        gemm(dU[xi], dM[xi, :, :T], V[xi, :, :T], 1.0, 1.0, False, True)


# ---------------------------------------------------------------- the parallel regions

@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _forward(y, arg, x, W, b, pad, m, R, zero, post, U, V, M, e, s, out):
    # x (N, C, H, W), W (F, C, 3, 3), b (F,) -> y (N, F, OH, OW) (post: see _forward_unit);
    # R tile rows per unit; zero (W,) zeros; U (a*a, F, C) filled here; V, M, e, s, out: one
    # buffer per thread (leading axis)
    _filters(U, W, m, False)
    n_rows = x.shape[0] * ((x.shape[2] + 2 * pad - 2 + m - 1) // m)  # tile rows of the batch
    n_units = (n_rows + R - 1) // R
    T = V.shape[0]
    for t in prange(T):
        for u in range(t * n_units // T, (t + 1) * n_units // T):
            _forward_unit(y, arg, x, U, b, pad, m, u * R, min(n_rows, (u + 1) * R),
                          V[t], M[t], e[t], s[t], out[t], zero, post)


@njit(cache=True, fastmath=FAST)
def _output_gradient(dz, dy, arg, y, n0, post):
    # dz (G, F, OH, OW) = the convolution's output gradient for images n0 .. n0 + G:
    # RELU: dy * (y > 0); RELU_POOL: dy, arg, y the pooled output's, unpooled (epilogue.py)
    for k in range(dz.shape[0]):
        dzk = dz[k].reshape(dz[k].size)
        if post == RELU_POOL:
            unpool_image(dzk, dz.shape[3], dz.shape[2], dy[n0 + k], arg[n0 + k])
        else:
            relu_mask_row(dzk, dy[n0 + k].reshape(dzk.size), y[n0 + k].reshape(dzk.size))


@njit(cache=True, parallel=PRANGE, fastmath=FAST)
def _backward(dW, db, dx, dy, arg, y, x, W, pad, m, G, R, Rx, need_dx, post, zero, dU_parts,
              db_parts, dz, V, dM, e, s, dyb, Uf, zero_bias, Vx, Mx, e_x, s_x, out_x):
    # dy (N, F, OH, OW), x (N, C, H, W), W (F, C, 3, 3) -> dW (F, C, 3, 3), db (F,), and
    # dx (N, C, H, W) if need_dx. post RELU, RELU_POOL: dy, arg, y are the fused forward's
    # output's (see _output_gradient), turned into the conv's output gradient dz per group of
    # G images, in dz (T, G, F, OH, OW). Each thread takes whole images, so the dz it builds is
    # all its dx needs. Per thread: dU_parts (T, a*a, F, C), db_parts (T, F), the buffers of the
    # weight-gradient units (V .. dyb, R tile rows each) and of the input-gradient units
    # (Vx .. out_x, Rx tile rows each); Uf (a*a, C, F) filled here.
    if need_dx:
        _filters(Uf, W, m, True)
    N = x.shape[0]
    TH = (x.shape[2] + 2 * pad - 2 + m - 1) // m
    THx = (x.shape[2] + m - 1) // m
    T = V.shape[0]
    for t in prange(T):
        dU_parts[t] = 0.0
        db_parts[t] = 0.0
        n_end = (t + 1) * N // T
        for n0 in range(t * N // T, n_end, G):
            n1 = min(n0 + G, n_end)
            if post == PLAIN:
                grad = dy[n0:n1]
            else:
                grad = dz[t, :n1 - n0]
                _output_gradient(grad, dy, arg, y, n0, post)
            xg = x[n0:n1]
            rows = (n1 - n0) * TH
            for g0 in range(0, rows, R):
                _weight_grad_unit(dU_parts[t], db_parts[t], grad, xg, pad, m, g0, min(rows, g0 + R),
                                  V[t], dM[t], e[t], s[t], dyb[t], zero)
            if need_dx:
                # dx = conv(dz, W flipped, pad 2 - pad): the forward units over dx's tiles
                rows = (n1 - n0) * THx
                for g0 in range(0, rows, Rx):
                    _forward_unit(dx[n0:n1], arg[:0], grad, Uf, zero_bias, 2 - pad, m, g0,
                                  min(rows, g0 + Rx), Vx[t], Mx[t], e_x[t], s_x[t], out_x[t], zero, PLAIN)
    # dU = dU_parts.sum(0), db = db_parts.sum(0), in thread order; dW = G^T dU G. Loops: an array
    # += or slice assignment compiles much more code (broadcasting, its errors' string formatting)
    dU = dU_parts.reshape(T, dU_parts.size // T)
    for t in range(1, T):
        for i in range(dU.shape[1]):
            dU[0, i] += dU[t, i]
        for f in range(db.shape[0]):
            db_parts[0, f] += db_parts[t, f]
    for f in range(db.shape[0]):
        db[f] = db_parts[0, f]
    _filters_adjoint(dW, dU_parts[0], m)


# --------------------------------------------------------------------------- Python side

def applies(x_shape, w_shape, stride, pad):
    """Whether Winograd F(m x m, 3 x 3) computes this convolution: 3x3, stride 1, pad 0 to 2."""
    return stride == 1 and tuple(w_shape[2:]) == (3, 3) and 0 <= pad <= 2


def _tile_rows_per_unit(n_rows, TW, channels, a, n_threads):
    # the most tile rows whose V and M (a*a * channels floats per tile, TW + 1 tiles a row)
    # fit in L2_BYTES, but no fewer units than threads
    fit = max(1, L2_BYTES // (4 * a * a * channels * (TW + 1)))
    return max(1, min(fit, -(-n_rows // n_threads)))


def _buffers(tag, T, m, c_in, c_out, R, TW):
    # per-thread buffers of units that turn c_in channels into c_out, R tile rows of TW tiles
    a = m + 2
    tiles, L = R * (TW + 1), R * m * (TW + 1) + a - m
    return (scratch(tag + ".V", (T, a * a, c_in, tiles)),
            scratch(tag + ".M", (T, a * a, c_out, tiles)),
            scratch(tag + ".e", (T, a, L)),
            scratch(tag + ".s", (T, m, a, tiles)),
            scratch(tag + ".out", (T, m, L)))


def _check_tile(m):
    if m not in (2, 4):
        raise ValueError(f"Winograd F(m x m, 3 x 3) is written out for m = 2 and m = 4, not {m}")


def zero_row(*arrays):
    """The zero row the input transforms read wherever a tile hangs over the padding: as wide
    as the widest row of ``arrays`` (x, and dy in the backward pass, which pad 2 makes wider)."""
    return np.zeros(max(a.shape[3] for a in arrays), arrays[0].dtype)


def forward(x, W, b, pad, n_threads, m=2):
    # x (N, C, H, W), W (F, C, 3, 3), b (F,) float32 C-contiguous -> y (N, F, OH, OW)
    return fused_forward(x, W, b, pad, n_threads, m, PLAIN)[0]


def fused_forward(x, W, b, pad, n_threads, m, post):
    # the same -> (y, arg): post RELU: y = relu(conv); RELU_POOL: y (N, F, OH // 2, OW // 2) =
    # maxpool2x2(relu(conv)) and arg its argmax (empty otherwise)
    _check_tile(m)
    N, C, H, Wd = x.shape
    F = W.shape[0]
    a = m + 2
    OH, OW = H + 2 * pad - 2, Wd + 2 * pad - 2
    TH, TW = -(-OH // m), -(-OW // m)
    T = max(1, min(n_threads, N * TH))
    R = _tile_rows_per_unit(N * TH, TW, C + F, a, T)
    shape = (N, F, OH // 2, OW // 2) if post == RELU_POOL else (N, F, OH, OW)
    y = np.empty(shape, np.float32)
    arg = np.empty(shape if post == RELU_POOL else (0, 0, 0, 0), np.int32)
    U = scratch("winograd.U", (a * a, F, C))
    _forward(y, arg, x, W, b, pad, m, R, zero_row(x), post, U,
             *_buffers("winograd.fwd", T, m, C, F, R, TW))
    return y, arg


def backward(dy, x, W, pad, need_dx, n_threads, m=2, post=PLAIN, arg=None, y=None):
    # dy (N, F, OH, OW), x (N, C, H, W), W (F, C, 3, 3) float32 C-contiguous
    # -> (dx (N, C, H, W) or None, dW (F, C, 3, 3), db (F,)); post RELU: y the ReLU's output;
    # RELU_POOL: dy, y, arg of the pooled output
    _check_tile(m)
    N, F = dy.shape[:2]
    _, C, H, Wd = x.shape
    a = m + 2
    OH, OW = H + 2 * pad - 2, Wd + 2 * pad - 2
    TH, TW = -(-OH // m), -(-OW // m)
    THx, TWx = -(-H // m), -(-Wd // m)
    T = max(1, min(n_threads, N))  # whole images per thread
    R = _tile_rows_per_unit(N * TH, TW, C + F, a, T)
    Rx = _tile_rows_per_unit(N * THx, TWx, C + F, a, T)
    G = max(1, R // TH)  # images per group: about one unit's tile rows
    dW, db = np.empty(W.shape, np.float32), np.empty(F, np.float32)
    dU_parts = scratch("winograd.dU_parts", (T, a * a, F, C))
    db_parts = scratch("winograd.db_parts", (T, F))
    dz = scratch("winograd.dz", (T, G if post != PLAIN else 0, F, OH, OW))
    dW_buffers = _buffers("winograd.dW", T, m, C, F, R, TW)
    if need_dx:
        dx = np.empty(x.shape, np.float32)
        Uf = scratch("winograd.Uf", (a * a, C, F))
        dx_buffers = _buffers("winograd.dx", T, m, F, C, Rx, TWx)
    else:  # untouched stand-ins of the right types
        dx, Uf, dx_buffers = x, dU_parts[0], dW_buffers
    arg = np.empty((0, 0, 0, 0), np.int32) if arg is None else arg
    _backward(dW, db, dx, dy, arg, dy if y is None else y, x, W, pad, m, G, R, Rx, need_dx, post,
              zero_row(x, dy), dU_parts, db_parts, dz, *dW_buffers, Uf, np.zeros(C, np.float32),
              *dx_buffers)
    return (dx if need_dx else None), dW, db
