"""Fully connected layer on the GPU: y = x @ W + b. Mirrors fastnn/backends/numpy/dense.py.

Also the two building blocks the convolution reuses: ``matmul``, a tiled shared-memory
GEMM with optional transposes and a fused bias, and ``column_sums``.
"""
from numba import cuda, float32

from .arrays import empty, require_device

TILE = 16          # the GEMM works on TILE x TILE tiles of c, one thread per element
TILE_PAD = TILE + 1  # shared tiles get one spare column against bank conflicts (a constant: shapes must be)

COL_THREADS = 32    # column_sums: 32 neighbouring columns per block (coalesced reads) ...
ROW_THREADS = 8     # ... each summed by 8 threads over interleaved rows
CHUNK_ROWS = 1024   # rows per block: longer columns are split over blocks, then summed again

SPLIT_K_TILES = 128  # matmul: fewer output tiles than this leave the GPU idle, so ...
SPLIT_K_MIN = 512    # ... K is split into slices of at least this length (when K >= 2 * SPLIT_K_MIN)


@cuda.jit
def matmul_kernel(c, a, b, trans_a, trans_b, bias, has_bias, k_chunk):
    # c (S, M, N): c[z] = op(a)[:, ks] @ op(b)[ks, :] for the z-th slice ks of K (k_chunk long),
    # op(a) (M, K), op(b) (K, N), op = transpose when trans_* is set; bias (N,) added to c[0]
    # NumPy (S = 1): c[0] = (a.T if trans_a else a) @ (b.T if trans_b else b) + (bias if has_bias else 0)
    # One block computes one TILE x TILE tile of c[z]; it walks its slice of K one tile at a time,
    # staging a tile of op(a) and a tile of op(b) in shared memory (padded by one column against
    # bank conflicts on the transposed stores).
    tile_a = cuda.shared.array((TILE, TILE_PAD), float32)   # tile_a[r, k] = op(a)[row0 + r, k0 + k]
    tile_b = cuda.shared.array((TILE, TILE_PAD), float32)   # tile_b[k, j] = op(b)[k0 + k, col0 + j]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    row0 = cuda.blockIdx.x * TILE   # rows on the grid's x: it may hold 2**31 - 1 blocks, y only 65535
    col0 = cuda.blockIdx.y * TILE
    z = cuda.blockIdx.z
    M = c.shape[1]
    N = c.shape[2]
    k_end = min(a.shape[0] if trans_a else a.shape[1], (z + 1) * k_chunk)
    acc = float32(0.0)
    for k0 in range(z * k_chunk, k_end, TILE):
        # Each load lets neighbouring threads (tx) read neighbouring addresses.
        if trans_a:   # a is (K, M)
            r, k = tx, ty
            tile_a[r, k] = a[k0 + k, row0 + r] if k0 + k < k_end and row0 + r < M else float32(0.0)
        else:         # a is (M, K)
            r, k = ty, tx
            tile_a[r, k] = a[row0 + r, k0 + k] if row0 + r < M and k0 + k < k_end else float32(0.0)
        if trans_b:   # b is (N, K)
            k, j = tx, ty
            tile_b[k, j] = b[col0 + j, k0 + k] if col0 + j < N and k0 + k < k_end else float32(0.0)
        else:         # b is (K, N)
            k, j = ty, tx
            tile_b[k, j] = b[k0 + k, col0 + j] if k0 + k < k_end and col0 + j < N else float32(0.0)
        cuda.syncthreads()
        for k in range(TILE):
            acc += tile_a[ty, k] * tile_b[k, tx]
        cuda.syncthreads()
    if row0 + ty < M and col0 + tx < N:
        if has_bias and z == 0:
            acc += bias[col0 + tx]
        c[z, row0 + ty, col0 + tx] = acc


@cuda.jit
def column_sums_kernel(out, a, chunk):
    # a (M, N) -> out (R, N): out[r] = a[r*chunk:(r+1)*chunk].sum(axis=0), one chunk of rows per grid row r
    # Block (COL_THREADS, ROW_THREADS): tx picks a column, ty an interleaved share of the chunk's
    # rows; the ROW_THREADS partial sums of a column meet in shared memory.
    partial = cuda.shared.array((ROW_THREADS, COL_THREADS), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    j = cuda.blockIdx.x * COL_THREADS + tx
    r = cuda.blockIdx.y
    end = min(a.shape[0], (r + 1) * chunk)
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
    tiles = ((M + TILE - 1) // TILE, (N + TILE - 1) // TILE)
    slices = 1
    if K >= 2 * SPLIT_K_MIN and tiles[0] * tiles[1] < SPLIT_K_TILES:
        slices = min(K // SPLIT_K_MIN, max(1, SPLIT_K_TILES // (tiles[0] * tiles[1])))
    k_chunk = (K + slices - 1) // slices
    k_chunk = (k_chunk + TILE - 1) // TILE * TILE           # whole tiles per slice
    slices = max(1, (K + k_chunk - 1) // k_chunk)
    c = empty((slices, M, N))
    has_bias = bias is not None
    matmul_kernel[(tiles[0], tiles[1], slices), (TILE, TILE)](c, a, b, trans_a, trans_b,
                                                             bias if has_bias else c[0, 0], has_bias, k_chunk)
    return c.reshape(M, N) if slices == 1 else column_sums(c.reshape(slices, M * N)).reshape(M, N)


def column_sums(a):
    """a.sum(axis=0) of a 2-D device array, as a new device array.

    Long columns (the convolution's bias gradient sums N*OH*OW rows) are cut into chunks of
    CHUNK_ROWS rows summed by separate blocks; the chunk sums are then summed the same way.
    """
    M, N = a.shape
    chunks = max(1, (M + CHUNK_ROWS - 1) // CHUNK_ROWS)
    out = empty((chunks, N))
    grid = ((N + COL_THREADS - 1) // COL_THREADS, chunks)
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
