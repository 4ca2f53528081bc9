"""Fully connected layer on the GPU: y = x @ W + b. Mirrors fastnn/backends/numpy/dense.py.

Also the two building blocks the convolution reuses: ``matmul``, a register-tiled GEMM with
optional transposes and a fused bias, and ``column_sums``.

The GEMM (the shape of the classic SGEMM kernels, e.g. Volkov & Demmel, CUTLASS's "simt"
path): a block computes a BM x BN tile of c, each of its threads a 4 x 4 sub-tile held in
sixteen registers. K is walked BK at a time through two shared-memory buffers: while the
threads multiply out one, they load the next (double buffering: one barrier per step, and
the global loads overlap the arithmetic). Per step a thread reads 4 + 4 values from shared
memory for 16 multiply-adds, where the one-output-per-thread tile read 2 per multiply-add.
"""
from numba import cuda, float32

from .arrays import SIMULATOR, empty, require_device

# Tile sizes. A GPU block: 16 x 16 threads, a 64 x 64 tile of c, K in steps of 16. The simulator
# runs each thread as a Python thread and pays for every barrier, so it gets 4 x 4 threads on
# 16 x 16 tiles, K in steps of 64 (fewer barriers), and few blocks that loop over the tiles;
# tests run the GPU's sizes too (tests/backends/test_cuda_traffic.py).
TM = TN = 4                        # outputs per thread: rows x columns (the sixteen registers below)
BM = BN = 16 if SIMULATOR else 64  # a block's tile of c
BK = 64 if SIMULATOR else 16        # K per shared-memory step
PAD = 1                            # a spare column in the shared tiles against bank conflicts
BM_PAD, BN_PAD = BM + PAD, BN + PAD   # (a shared array's shape must be constants, not sums)
GEMM_GRID_LIMIT = 2 if SIMULATOR else 65535   # blocks per slice; each loops over tiles beyond that

COL_THREADS = 16 if SIMULATOR else 32   # column_sums: neighbouring columns per block (coalesced reads) ...
ROW_THREADS = 2 if SIMULATOR else 8     # ... each summed by this many threads over interleaved rows
CHUNK_ROWS = 1024   # rows per block: longer columns are split over blocks, then summed again

SPLIT_K_TILES = 128  # matmul: fewer output tiles than this leave the GPU idle, so ...
SPLIT_K_MIN = 512    # ... K is split into slices of at least this length (when K >= 2 * SPLIT_K_MIN)


@cuda.jit
def matmul_kernel(c, a, b, trans_a, trans_b, bias, has_bias, k_chunk):
    # c (S, M, N): c[z] = op(a)[:, ks] @ op(b)[ks, :] for the z-th slice ks of K (k_chunk long),
    # op(a) (M, K), op(b) (K, N), op = transpose when trans_* is set; bias (N,) added to c[0]
    # NumPy (S = 1): c[0] = (a.T if trans_a else a) @ (b.T if trans_b else b) + (bias if has_bias else 0)
    # Block (BN // TN, BM // TM) threads; thread (tx, ty) computes rows row0 + 4*ty + (0..3) and
    # columns col0 + 4*tx + (0..3) of each tile the block takes (tiles blockIdx.x, + gridDim.x, ...).
    tile_a = cuda.shared.array((2, BK, BM_PAD), float32)   # two buffers of op(a)'s tile, k-major
    tile_b = cuda.shared.array((2, BK, BN_PAD), float32)   # two buffers of op(b)'s tile
    out = cuda.local.array((TM, TN), float32)
    M, N = c.shape[1], c.shape[2]
    z = cuda.blockIdx.z
    k_start = z * k_chunk
    k_end = min(a.shape[0] if trans_a else a.shape[1], k_start + k_chunk)
    steps = (k_end - k_start + BK - 1) // BK
    tiles_n = (N + BN - 1) // BN
    t = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    threads = cuda.blockDim.x * cuda.blockDim.y
    r0 = TM * cuda.threadIdx.y         # this thread's first row and column within a tile
    j0 = TN * cuda.threadIdx.x
    for tile in range(cuda.blockIdx.x, ((M + BM - 1) // BM) * tiles_n, cuda.gridDim.x):
        row0, col0 = (tile // tiles_n) * BM, (tile % tiles_n) * BN
        rows, cols = min(BM, M - row0), min(BN, N - col0)   # the tile's part inside c
        busy = r0 < rows and j0 < cols    # a thread wholly outside c helps load, and skips the arithmetic
        c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = float32(0.0)
        c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = float32(0.0)
        for step in range(-1, steps):   # step -1 only loads the first tiles
            if step + 1 < steps:
                # the next step's tiles into the other buffer, which nobody reads now:
                # tile_a[nb, k, r] = op(a)[row0 + r, k0 + k], tile_b[nb, k, j] = op(b)[k0 + k, col0 + j],
                # only what lies inside op(a) and op(b) (rows past M and columns past N feed no output
                # that is stored, and the arithmetic stops at K); neighbouring threads read neighbouring
                # addresses (k fastest where the matrix is row-major in k, else the row or the column)
                nb, k0 = (step + 1) % 2, k_start + (step + 1) * BK
                depth = min(BK, k_end - k0)
                for e in range(t, depth * rows, threads):
                    if trans_a:   # a is (K, M)
                        k, r = e // rows, e % rows
                        tile_a[nb, k, r] = a[k0 + k, row0 + r]
                    else:         # a is (M, K)
                        r, k = e // depth, e % depth
                        tile_a[nb, k, r] = a[row0 + r, k0 + k]
                for e in range(t, depth * cols, threads):
                    if trans_b:   # b is (N, K)
                        j, k = e // depth, e % depth
                        tile_b[nb, k, j] = b[col0 + j, k0 + k]
                    else:         # b is (K, N)
                        k, j = e // cols, e % cols
                        tile_b[nb, k, j] = b[k0 + k, col0 + j]
            if step >= 0 and busy:
                buf = step % 2
                for k in range(min(BK, k_end - k_start - step * BK)):
                    # c[i][j] += a[i] * b[j]: the 4 x 4 outer product of a column of op(a)'s tile and
                    # a row of op(b)'s, in registers
                    a0, a1, a2, a3 = tile_a[buf, k, r0], tile_a[buf, k, r0 + 1], tile_a[buf, k, r0 + 2], \
                        tile_a[buf, k, r0 + 3]
                    b0, b1, b2, b3 = tile_b[buf, k, j0], tile_b[buf, k, j0 + 1], tile_b[buf, k, j0 + 2], \
                        tile_b[buf, k, j0 + 3]
                    c00, c01, c02, c03 = c00 + a0 * b0, c01 + a0 * b1, c02 + a0 * b2, c03 + a0 * b3
                    c10, c11, c12, c13 = c10 + a1 * b0, c11 + a1 * b1, c12 + a1 * b2, c13 + a1 * b3
                    c20, c21, c22, c23 = c20 + a2 * b0, c21 + a2 * b1, c22 + a2 * b2, c23 + a2 * b3
                    c30, c31, c32, c33 = c30 + a3 * b0, c31 + a3 * b1, c32 + a3 * b2, c33 + a3 * b3
            cuda.syncthreads()   # everyone is done with this buffer, and the next one is loaded
        if busy:
            # c[z, row0 + r0 + i, col0 + j0 + j] = out[i, j] (+ bias in slice 0), inside c
            out[0, 0], out[0, 1], out[0, 2], out[0, 3] = c00, c01, c02, c03
            out[1, 0], out[1, 1], out[1, 2], out[1, 3] = c10, c11, c12, c13
            out[2, 0], out[2, 1], out[2, 2], out[2, 3] = c20, c21, c22, c23
            out[3, 0], out[3, 1], out[3, 2], out[3, 3] = c30, c31, c32, c33
            for i in range(min(TM, rows - r0)):
                for j in range(min(TN, cols - j0)):
                    value = out[i, j]
                    if has_bias and z == 0:
                        value += bias[col0 + j0 + j]
                    c[z, row0 + r0 + i, col0 + j0 + j] = value


@cuda.jit
def column_sums_kernel(out, a, chunk):
    # a (M, N) -> out (R, N): out[r] = a[r*chunk:(r+1)*chunk].sum(axis=0), one chunk of rows per grid row r
    # Block (COL_THREADS, ROW_THREADS): tx picks a column, ty an interleaved share of the chunk's
    # rows; the ROW_THREADS partial sums of a column meet in shared memory. Blocks loop over the
    # column groups beyond the grid.
    partial = cuda.shared.array((ROW_THREADS, COL_THREADS), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    r = cuda.blockIdx.y
    end = min(a.shape[0], (r + 1) * chunk)
    for group in range(cuda.blockIdx.x, (a.shape[1] + COL_THREADS - 1) // COL_THREADS, cuda.gridDim.x):
        j = group * COL_THREADS + tx
        acc = float32(0.0)
        if j < a.shape[1]:
            for i in range(r * chunk + ty, end, ROW_THREADS):
                acc += a[i, j]
        partial[ty, tx] = acc
        cuda.syncthreads()
        if ty == 0 and j < a.shape[1]:
            total = float32(0.0)
            for k in range(ROW_THREADS):
                total += partial[k, tx]
            out[r, j] = total
        cuda.syncthreads()   # partial is written again by the next group


def matmul(a, b, trans_a=False, trans_b=False, bias=None):
    """op(a) @ op(b) (+ bias) as a new (M, N) device array; op transposes when trans_* is set.

    Split-K: when c has few tiles but K is long (the convolution's dW = dy2.T @ col sums over
    N*OH*OW), K is cut into slices computed by separate blocks, and the slices' products are
    summed by ``column_sums``; otherwise one block walks all of K.
    """
    M = a.shape[1] if trans_a else a.shape[0]
    K = a.shape[0] if trans_a else a.shape[1]
    N = b.shape[0] if trans_b else b.shape[1]
    K_b = b.shape[1] if trans_b else b.shape[0]
    if K != K_b:
        raise ValueError(f"cuda matmul: inner sizes differ ({K} and {K_b})")
    tiles = ((M + BM - 1) // BM) * ((N + BN - 1) // BN)
    slices = 1
    if K >= 2 * SPLIT_K_MIN and tiles < SPLIT_K_TILES:
        slices = min(K // SPLIT_K_MIN, max(1, SPLIT_K_TILES // tiles))
    k_chunk = (K + slices - 1) // slices
    k_chunk = (k_chunk + BK - 1) // BK * BK           # whole steps per slice
    slices = max(1, (K + k_chunk - 1) // k_chunk)
    c = empty((slices, M, N))
    has_bias = bias is not None
    grid = (min(tiles, GEMM_GRID_LIMIT), 1, slices)
    matmul_kernel[grid, (BN // TN, BM // TM)](c, a, b, trans_a, trans_b, bias if has_bias else c[0, 0],
                                              has_bias, k_chunk)
    return c.reshape(M, N) if slices == 1 else column_sums(c.reshape(slices, M * N)).reshape(M, N)


def column_sums(a):
    """a.sum(axis=0) of a 2-D device array, as a new device array.

    Long columns (the convolution's bias gradient sums N*OH*OW rows) are cut into chunks of
    CHUNK_ROWS rows summed by separate blocks; the chunk sums are then summed the same way.
    """
    M, N = a.shape
    chunks = max(1, (M + CHUNK_ROWS - 1) // CHUNK_ROWS)
    out = empty((chunks, N))
    grid = (min((N + COL_THREADS - 1) // COL_THREADS, GEMM_GRID_LIMIT), chunks)
    column_sums_kernel[grid, (COL_THREADS, ROW_THREADS)](out, a, CHUNK_ROWS)
    return out.reshape(N) if chunks == 1 else column_sums(out)


def dense_forward(x, W, b):
    # x (N, D), W (D, M), b (M,) -> y (N, M) = x @ W + b
    require_device("dense_forward", x=x, W=W, b=b)
    return matmul(x, W, bias=b)


def dense_backward(dy, x, W, need_dx=True):
    # dy (N, M) -> dx (N, D) = dy @ W.T or None, dW (D, M) = x.T @ dy, db (M,) = dy.sum(axis=0)
    require_device("dense_backward", dy=dy, x=x, W=W)
    dx = matmul(dy, W, trans_b=True) if need_dx else None
    return dx, matmul(x, dy, trans_a=True), column_sums(dy)
