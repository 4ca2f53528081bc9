"""Convolution by im2col + the register-tiled GEMM. Mirrors fastnn/backends/numpy/conv.py.

im2col lays every receptive field out as a row, so the convolution becomes
``col @ W.reshape(F, -1).T + b`` (one ``matmul`` with the bias fused in), kept for the
weight gradient ``dy2.T @ col``; the input gradient is the reference's
``col2im(dy2 @ W.reshape(F, -1))``, a GEMM and a gather. The GEMM's rows are (n, oh, ow),
so its (N*OH*OW, F) result is turned into NCHW, and the gradient back, by a transpose through
shared memory that reads and writes whole rows (coalesced both ways). im2col and col2im give
one thread one element of what they write, so nothing is written twice and no atomics are used.
"""
from numba import cuda, float32

from .arrays import SIMULATOR, empty, launch, require_device
from .dense import GEMM_GRID_LIMIT, column_sums, matmul

# transpose tiles: TT x TT elements, a block of TT x TT_ROWS threads (each thread TT // TT_ROWS rows);
# the simulator, which pays for threads and barriers, gets the same tiles with fewer threads
TT = 32
TT_PAD = TT + 1   # + 1: a tile's column reads hit TT different banks (a shared shape must be a constant)
TT_ROWS = 1 if SIMULATOR else 8


def output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


@cuda.jit
def im2col_kernel(col, x, kh, kw, stride, pad, oh_size, ow_size):
    # x (N, C, H, W) -> col (N*OH*OW, C*KH*KW), rows ordered (n, oh, ow), columns (c, i, j)
    # NumPy: col[(n, oh, ow), (c, i, j)] = x_padded[n, c, oh*stride + i, ow*stride + j]
    for t in range(cuda.grid(1), col.size, cuda.gridsize(1)):
        n_cols = col.shape[1]
        r, k = t // n_cols, t % n_cols
        n, p = r // (oh_size * ow_size), r % (oh_size * ow_size)
        oh, ow = p // ow_size, p % ow_size
        c, tap = k // (kh * kw), k % (kh * kw)
        i, j = tap // kw, tap % kw
        h = oh * stride - pad + i
        w = ow * stride - pad + j
        inside = 0 <= h < x.shape[2] and 0 <= w < x.shape[3]
        col[r, k] = x[n, c, h, w] if inside else float32(0.0)


@cuda.jit
def col2im_kernel(x, col, kh, kw, stride, pad, oh_size, ow_size):
    # col (N*OH*OW, C*KH*KW) -> x (N, C, H, W), overlapping windows summed
    # NumPy: x = sum over taps (i, j) of col's entries whose window covers (h, w) at tap (i, j)
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        C, H, W = x.shape[1], x.shape[2], x.shape[3]
        n, c = t // (C * H * W), (t // (H * W)) % C
        h, w = (t // W) % H, t % W
        acc = float32(0.0)
        for i in range(kh):           # taps in the reference's order: i, then j
            hs = h + pad - i          # = oh * stride for the window that sees (h, w) at tap i
            if hs >= 0 and hs % stride == 0 and hs // stride < oh_size:
                oh = hs // stride
                for j in range(kw):
                    ws = w + pad - j
                    if ws >= 0 and ws % stride == 0 and ws // stride < ow_size:
                        ow = ws // stride
                        acc += col[(n * oh_size + oh) * ow_size + ow, (c * kh + i) * kw + j]
        x[n, c, h, w] = acc


@cuda.jit
def transpose_kernel(out, inp):
    # inp (B, R, C) -> out (B, C, R); NumPy: out = inp.transpose(0, 2, 1)
    # (rows (N*OH*OW, F) seen as (N, OH*OW, F) -> y (N, F, OH*OW), and the gradient back)
    # A block moves a TT x TT tile through shared memory: it reads TT rows of inp, neighbouring
    # threads on neighbouring columns, and writes TT rows of out the same way. Blocks loop over tiles.
    tile = cuda.shared.array((TT, TT_PAD), float32)
    B, R, C = inp.shape[0], inp.shape[1], inp.shape[2]
    tiles_r, tiles_c = (R + TT - 1) // TT, (C + TT - 1) // TT
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    for t in range(cuda.blockIdx.x, B * tiles_r * tiles_c, cuda.gridDim.x):
        b, r0, c0 = t // (tiles_r * tiles_c), (t // tiles_c) % tiles_r * TT, t % tiles_c * TT
        for i in range(ty, TT, TT_ROWS):           # tile[i, j] = inp[b, r0 + i, c0 + j]
            if r0 + i < R and c0 + tx < C:
                tile[i, tx] = inp[b, r0 + i, c0 + tx]
        cuda.syncthreads()
        for j in range(ty, TT, TT_ROWS):           # out[b, c0 + j, r0 + i] = tile[i, j]
            if c0 + j < C and r0 + tx < R:
                out[b, c0 + j, r0 + tx] = tile[tx, j]
        cuda.syncthreads()                         # the tile is written again for the next one


def transpose(x):
    """x (B, R, C) -> a new (B, C, R) device array, x.transpose(0, 2, 1)."""
    B, R, C = x.shape
    out = empty((B, C, R))
    tiles = B * ((R + TT - 1) // TT) * ((C + TT - 1) // TT)
    if out.size:
        transpose_kernel[min(tiles, GEMM_GRID_LIMIT), (TT, TT_ROWS)](out, x)
    return out


def im2col(x, kh, kw, stride, pad):
    # x (N, C, H, W) -> col (N*OH*OW, C*KH*KW)
    require_device("im2col", x=x)
    N, C, H, W = x.shape
    OH, OW = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    col = empty((N * OH * OW, C * kh * kw))
    im2col_kernel[launch(col.size)](col, x, kh, kw, stride, pad, OH, OW)
    return col


def col2im(col, x_shape, kh, kw, stride, pad):
    # col (N*OH*OW, C*KH*KW) -> x (N, C, H, W)
    require_device("col2im", col=col)
    N, C, H, W = x_shape
    OH, OW = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    x = empty(tuple(x_shape))
    col2im_kernel[launch(x.size)](x, col, kh, kw, stride, pad, OH, OW)
    return x


def conv2d_forward(x, W, b, stride, pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)
    require_device("conv2d_forward", x=x, W=W, b=b)
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = output_size(H, KH, stride, pad), output_size(Wd, KW, stride, pad)
    col = im2col(x, KH, KW, stride, pad)
    rows = matmul(col, W.reshape(F, C * KH * KW), trans_b=True, bias=b)   # (N*OH*OW, F)
    y = transpose(rows.reshape(N, OH * OW, F)).reshape(N, F, OH, OW)     # NCHW
    return y, (tuple(x.shape), col, W, stride, pad)


def conv2d_backward(dy, cache, need_dx=True):
    # dy (N, F, OH, OW) -> dx (N, C, H, W) or None, dW (F, C, KH, KW), db (F,)
    require_device("conv2d_backward", dy=dy)
    x_shape, col, W, stride, pad = cache
    N, F, OH, OW = dy.shape
    _, C, KH, KW = W.shape
    dy2 = transpose(dy.reshape(N, F, OH * OW)).reshape(N * OH * OW, F)   # rows (n, oh, ow)
    db = column_sums(dy2)                                        # dy2.sum(axis=0)
    dW = matmul(dy2, col, trans_a=True).reshape(F, C, KH, KW)    # dy2.T @ col
    dx = None
    if need_dx:                                                  # col2im(dy2 @ W.reshape(F, -1))
        dx = col2im(matmul(dy2, W.reshape(F, C * KH * KW)), x_shape, KH, KW, stride, pad)
    return dx, dW, db


def conv2d_algorithm(x_shape, w_shape, stride, pad):
    """One algorithm on the GPU so far: whole-batch im2col and the register-tiled GEMM."""
    return "im2col"
