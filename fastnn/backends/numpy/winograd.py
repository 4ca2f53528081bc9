"""Winograd convolution F(m x m, 3 x 3) in plain NumPy: the algorithm as the paper writes it.

Read this before its compiled twins, which compute exactly these steps in cache-sized
groups of tiles: fastnn/backends/numba/conv/winograd.py (Numba) and fastnn_ext/_winograd.pyx
(Cython, adapter fastnn/backends/cython/winograd.py). This module is not a backend kernel
table: the numpy backend's conv.py (im2col) stays the reference, and the tests check this
file against it, and the compiled versions against this file.

The idea (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015)
--------------------------------------------------------------------------------------
A 3x3 stride-1 convolution computes each m x m block of outputs from an (m+2) x (m+2) tile
of input. Directly that is 9 multiplies per output; Winograd's minimal filtering algorithm
gets the whole m x m block with (m+2)^2 multiplies, after cheap additions that transform
the tile and the filter into a common basis:

    Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A          d: input tile (a x a), a = m + 2
                                                  g: filter (3 x 3), Y: output block (m x m)

F(2x2, 3x3): 16 multiplies for 4 outputs instead of 36 (2.25x fewer);
F(4x4, 3x3): 36 multiplies for 16 outputs instead of 144 (4x fewer), with larger
constants in the transforms and so more float32 rounding error.

Over channels and a batch the elementwise products become matrix products. Number the
a*a positions of a transformed tile xi = (i, j), the tiles t = (n, th, tw), and write

    U[xi]  (F, C)  = (G g[f, c] G^T)[xi]           filters, transformed once
    V[xi]  (C, T)  = (B^T d[c, t] B)[xi]           input tiles, transformed
    M[xi]  (F, T)  = U[xi] @ V[xi]                 one GEMM per position: the sum over c
    y tile (f, t)  = A^T M[:, f, t] A              back to m x m outputs

Edges: the output (OH, OW) = (H + 2 pad - 2, W + 2 pad - 2) is covered by TH x TW tiles
of m x m; where OH or OW is not a multiple of m, the input is zero-padded further on the
bottom/right and the extra outputs are cropped.

Backward
--------
* dx: a stride-1 3x3 convolution with padding p is, transposed, the convolution of dy with
  the filters rotated by 180 degrees, input and output channels swapped, and padding 2 - p:
  ``dx = conv(dy, W.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1], pad=2 - p)``, whose output has
  exactly x's shape (OH + 2 (2 - p) - 2 = H). So it is the forward algorithm again. (For
  p > 2 the "padding" 2 - p is negative, which means cropping: ``_framed`` handles both.)
* dW: each step above is linear, so its adjoint runs backwards through it. The adjoint of
  ``Y = A^T M A`` is ``dM = A dY A^T`` (dY: the m x m block of dy, zero past the edge),
  the adjoint of ``M[xi] = U[xi] @ V[xi]`` is ``dU[xi] = dM[xi] @ V[xi].T`` (the sum over
  tiles), and the adjoint of ``U = G g G^T`` is ``dg = G^T dU G``.
* db = dy.sum((0, 2, 3)).
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# ---------------------------------------------------------------- the transform matrices

# F(2x2, 3x3): 4x4 input tiles, 2x2 output blocks
BT_2 = np.array([[1,  0, -1,  0],
                 [0,  1,  1,  0],
                 [0, -1,  1,  0],
                 [0,  1,  0, -1]], dtype=np.float64)
G_2 = np.array([[1,     0,    0],
                [1 / 2,  1 / 2, 1 / 2],
                [1 / 2, -1 / 2, 1 / 2],
                [0,     0,    1]], dtype=np.float64)
AT_2 = np.array([[1, 1,  1,  0],
                 [0, 1, -1, -1]], dtype=np.float64)

# F(4x4, 3x3): 6x6 input tiles, 4x4 output blocks (interpolation points 0, +-1, +-2, inf)
BT_4 = np.array([[4,  0, -5,  0, 1, 0],
                 [0, -4, -4,  1, 1, 0],
                 [0,  4, -4, -1, 1, 0],
                 [0, -2, -1,  2, 1, 0],
                 [0,  2, -1, -2, 1, 0],
                 [0,  4,  0, -5, 0, 1]], dtype=np.float64)
G_4 = np.array([[1 / 4,      0,     0],
                [-1 / 6, -1 / 6, -1 / 6],
                [-1 / 6,  1 / 6, -1 / 6],
                [1 / 24,  1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6],
                [0,          0,     1]], dtype=np.float64)
AT_4 = np.array([[1, 1,  1, 1,  1, 0],
                 [0, 1, -1, 2, -2, 0],
                 [0, 1,  1, 4,  4, 0],
                 [0, 1, -1, 8, -8, 1]], dtype=np.float64)

MATRICES = {2: (BT_2, G_2, AT_2), 4: (BT_4, G_4, AT_4)}


def matrices(m):
    """(B^T, G, A^T) of F(m x m, 3 x 3), m = 2 or 4, in float64."""
    if m not in MATRICES:
        raise ValueError(f"Winograd F(m x m, 3 x 3) is written out for m = 2 and m = 4, not {m}")
    return MATRICES[m]


def tiles_for(size, m):
    """How many m-wide tiles cover ``size`` outputs (the last one may stick out)."""
    return -(-size // m)


# ----------------------------------------------------------------------------- the steps

def transform_filters(W, m):
    # W (F, C, 3, 3) -> U (a*a, F, C):  U[:, f, c] = G W[f, c] G^T, positions flattened
    _, G, _ = matrices(m)
    F, C = W.shape[:2]
    G = G.astype(W.dtype)
    U = G @ W @ G.T                                           # (F, C, a, a)
    return U.reshape(F, C, -1).transpose(2, 0, 1).copy()      # (a*a, F, C)


def _framed(x, pad, rows, cols):
    # x (N, C, H, W) -> xp (N, C, rows, cols), xp[..., i, j] = x[..., i - pad, j - pad], zero
    # outside x: the zero padding plus the extra bottom/right margin of the last tiles (pad < 0
    # crops instead)
    N, C, H, W = x.shape
    xp = np.zeros((N, C, rows, cols), x.dtype)
    r0, r1 = max(0, pad), min(rows, H + pad)
    c0, c1 = max(0, pad), min(cols, W + pad)
    if r0 < r1 and c0 < c1:
        xp[:, :, r0:r1, c0:c1] = x[:, :, r0 - pad:r1 - pad, c0 - pad:c1 - pad]
    return xp


def transform_input(x, pad, m, TH, TW):
    # x (N, C, H, W) -> V (a*a, C, N*TH*TW):  V[:, c, (n, th, tw)] = B^T d B, with the tile
    # d = x_padded[n, c, th*m : th*m + a, tw*m : tw*m + a]   (tiles overlap by 2)
    BT, _, _ = matrices(m)
    a = m + 2
    N, C = x.shape[:2]
    BT = BT.astype(x.dtype)
    xp = _framed(x, pad, TH * m + 2, TW * m + 2)
    d = sliding_window_view(xp, (a, a), axis=(2, 3))[:, :, ::m, ::m]   # (N, C, TH, TW, a, a)
    V = BT @ d @ BT.T                                                   # (N, C, TH, TW, a, a)
    return V.reshape(N, C, TH * TW, a * a).transpose(3, 1, 0, 2).reshape(a * a, C, -1)


def transform_output(M, m, N, TH, TW):
    # M (a*a, F, N*TH*TW) -> Y (N, F, TH*m, TW*m):  each tile's block A^T M A
    _, _, AT = matrices(m)
    a = m + 2
    F = M.shape[1]
    AT = AT.astype(M.dtype)
    M = M.reshape(a, a, F, N, TH, TW).transpose(3, 2, 4, 5, 0, 1)      # (N, F, TH, TW, a, a)
    Y = AT @ M @ AT.T                                                   # (N, F, TH, TW, m, m)
    return Y.transpose(0, 1, 2, 4, 3, 5).reshape(N, F, TH * m, TW * m)


def conv2d_forward(x, W, b, pad, m=2):
    # x (N, C, H, W), W (F, C, 3, 3), b (F,) -> y (N, F, OH, OW); stride 1, float32 or float64
    N, C, H, Wd = x.shape
    F = W.shape[0]
    OH, OW = H + 2 * pad - 2, Wd + 2 * pad - 2
    TH, TW = tiles_for(OH, m), tiles_for(OW, m)
    U = transform_filters(W, m)                   # (a*a, F, C)
    V = transform_input(x, pad, m, TH, TW)        # (a*a, C, T)
    M = U @ V                                     # (a*a, F, T): one GEMM per position
    Y = transform_output(M, m, N, TH, TW)         # (N, F, TH*m, TW*m)
    return Y[:, :, :OH, :OW] + b[:, None, None]   # crop the ragged edge, add the bias


def conv2d_backward(dy, x, W, pad, m=2, need_dx=True):
    # dy (N, F, OH, OW), x (N, C, H, W), W (F, C, 3, 3) -> (dx (N, C, H, W) or None, dW, db)
    N, F, OH, OW = dy.shape
    C = x.shape[1]
    a = m + 2
    TH, TW = tiles_for(OH, m), tiles_for(OW, m)
    BT, G, AT = (mat.astype(dy.dtype) for mat in matrices(m))

    # dM = A dY A^T: the adjoint of the output transform, dY zero past the ragged edge
    dYp = np.zeros((N, F, TH * m, TW * m), dy.dtype)
    dYp[:, :, :OH, :OW] = dy
    dY = dYp.reshape(N, F, TH, m, TW, m).transpose(0, 1, 2, 4, 3, 5)    # (N, F, TH, TW, m, m)
    dM = AT.T @ dY @ AT                                                 # (N, F, TH, TW, a, a)
    dM = dM.reshape(N, F, TH * TW, a * a).transpose(3, 1, 0, 2).reshape(a * a, F, -1)

    # dU[xi] = dM[xi] @ V[xi].T: the adjoint of M = U @ V, summed over the tiles
    V = transform_input(x, pad, m, TH, TW)                              # (a*a, C, T)
    dU = dM @ V.transpose(0, 2, 1)                                      # (a*a, F, C)
    # dW = G^T dU G: the adjoint of U = G W G^T
    dW = G.T @ dU.transpose(1, 2, 0).reshape(F, C, a, a) @ G            # (F, C, 3, 3)
    db = dy.sum(axis=(0, 2, 3))

    dx = None
    if need_dx:
        # dx = conv(dy, W rotated 180 degrees with channels swapped, pad 2 - p), no bias
        W_flip = W.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
        dx = conv2d_forward(dy, W_flip, np.zeros(C, dy.dtype), 2 - pad, m)
    return dx, dW, db
