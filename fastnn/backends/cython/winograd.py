"""Winograd convolution F(2x2, 3x3) (and F(4x4, 3x3)) for 3x3 stride-1 layers: the adapter of
fastnn_ext/_winograd.pyx. Mirrors fastnn/backends/numba/conv/winograd.py (work units sized to
L2, per-thread buffers, one parallel region per call); the math is
fastnn/backends/numpy/winograd.py.

    applies(x_shape, w_shape, stride, pad) -> bool
    forward(x, W, b, pad, n_threads=None, m=2) -> y
    backward(dy, x, W, pad, need_dx=True, n_threads=None, m=2) -> (dx or None, dW, db)

and fused with the ReLU (and the 2x2 max-pool) that follow (fastnn/backends/cython/fused.py):

    forward_relu(x, W, b, pad, pool, n_threads=None, m=2) -> (y, arg or None)
    backward_relu(dy, x, W, pad, y=None, arg=None, need_dx=True, n_threads=None, m=2)

Arrays are float32 or float64 (one dtype, made C-contiguous here when they are not);
n_threads defaults to OpenMP's limit. The per-thread buffers of a call are carved out of one
work array (reused by the next call with the same shapes).
"""
import math

import numpy as np

from ...errors import BackendUnavailableError
from ._prep import floats, work

try:
    from fastnn_ext import _winograd
except ImportError as e:  # an extension built before _winograd.pyx existed
    raise BackendUnavailableError(
        f"the cython backend's Winograd kernels (fastnn_ext._winograd) cannot be imported ({e}); "
        f"rebuild the extension with `pip install -e .` (or `python setup.py build_ext --inplace`) "
        f"from the fastnn source tree") from e

L2_BYTES = 512 * 1024  # V + M of one work unit (see the numba twin)


def applies(x_shape, w_shape, stride, pad):
    """Whether Winograd F(m x m, 3 x 3) computes this convolution: 3x3, stride 1, pad 0 to 2."""
    return stride == 1 and tuple(w_shape[2:]) == (3, 3) and 0 <= pad <= 2


def _tile_rows_per_unit(n_rows, TW, channels, a, n_threads, itemsize):
    # the most tile rows whose V and M (a*a * channels values a tile, TW + 1 tiles a row) fit in
    # L2_BYTES, but no fewer units than threads
    fit = max(1, L2_BYTES // (itemsize * a * a * channels * (TW + 1)))
    return max(1, min(fit, -(-n_rows // n_threads)))


def _equal_units(rows, fit):
    """Tile rows per unit when ``rows`` are cut into equal units of ``fit`` to 2 * ``fit`` rows."""
    return max(1, -(-rows // max(1, rows // fit)))


def _unit_shapes(T, m, c_in, c_out, R, TW):
    # per-thread buffers of units that turn c_in channels into c_out: V, M, e, s, out
    a = m + 2
    tiles, L = R * (TW + 1), R * m * (TW + 1) + a - m
    return [(T, a * a, c_in, tiles), (T, a * a, c_out, tiles), (T, a, L), (T, m * a * tiles),
            (T, m, L)]


def _carve(role, shapes, dtype):
    """Views of the given shapes, one after the other in one work array."""
    sizes = [math.prod(shape) for shape in shapes]
    flat = work(role, (sum(sizes),), dtype)
    views, start = [], 0
    for shape, size in zip(shapes, sizes):
        views.append(flat[start:start + size].reshape(shape))
        start += size
    return views


def _check_tile(m):
    if m not in (2, 4):
        raise ValueError(f"Winograd F(m x m, 3 x 3) is written out for m = 2 and m = 4, not {m}")


def zero_row(*arrays):
    """The zero row the input transforms read wherever a tile hangs over the padding: as wide
    as the widest row of ``arrays`` (x, and dy in the backward pass, which pad 2 makes wider)."""
    return np.zeros(max(a.shape[3] for a in arrays), arrays[0].dtype)


def forward(x, W, b, pad, n_threads=None, m=2):
    # x (N, C, H, W), W (F, C, 3, 3), b (F,) -> y (N, F, OH, OW)
    return _forward(x, W, b, pad, n_threads, m, "bias")[0]


def forward_relu(x, W, b, pad, pool, n_threads=None, m=2):
    # x (N, C, H, W) -> y (N, F, OH, OW) = relu(conv2d(x)), arg None; or, if pool, y (N, F, OH//2,
    # OW//2) = maxpool2x2(relu(conv2d(x))) and arg int32 of y's shape, each window's winner
    return _forward(x, W, b, pad, n_threads, m, "relu_pool" if pool else "relu")


def _forward(x, W, b, pad, n_threads, m, epilogue):
    _check_tile(m)
    x, W, b = floats(x, W, b)
    N, C, H, Wd = x.shape
    F = W.shape[0]
    a = m + 2
    OH, OW = H + 2 * pad - 2, Wd + 2 * pad - 2
    TH, TW = -(-OH // m), -(-OW // m)
    T = max(1, min(n_threads or _winograd.max_threads(), N * TH))
    R = _tile_rows_per_unit(N * TH, TW, C + F, a, T, x.itemsize)
    pool = epilogue == "relu_pool"
    y = np.empty((N, F, OH // 2, OW // 2) if pool else (N, F, OH, OW), x.dtype)
    arg = np.empty(y.shape, np.int32) if pool else None
    U, *buffers = _carve("winograd.forward", [(a * a, F, C)] + _unit_shapes(T, m, C, F, R, TW),
                         x.dtype)
    _winograd.forward(y, x, W, b, pad, m, R, zero_row(x), U, *buffers,
                      epilogue=_winograd.EPILOGUES[epilogue], arg=arg)
    return y, arg


def backward(dy, x, W, pad, need_dx=True, n_threads=None, m=2):
    # dy (N, F, OH, OW), x (N, C, H, W), W (F, C, 3, 3) -> (dx (N, C, H, W) or None, dW, db)
    _check_tile(m)
    dy, x, W = floats(dy, x, W)
    N, F, OH, OW = dy.shape
    _, C, H, Wd = x.shape
    a = m + 2
    TH, TW = -(-OH // m), -(-OW // m)
    THx, TWx = -(-H // m), -(-Wd // m)
    T = max(1, n_threads or _winograd.max_threads())
    R = _tile_rows_per_unit(N * TH, TW, C + F, a, T, x.itemsize)
    Rx = _tile_rows_per_unit(N * THx, TWx, C + F, a, T, x.itemsize)
    dW, db = np.empty(W.shape, x.dtype), np.empty(F, x.dtype)
    shapes = [(T, a * a, F, C), (T, F)] + _unit_shapes(T, m, C, F, R, TW)
    if need_dx:
        shapes += [(a * a, C, F)] + _unit_shapes(T, m, F, C, Rx, TWx)
    dU_parts, db_parts, *buffers = _carve("winograd.backward", shapes, x.dtype)
    if need_dx:
        dx = np.empty(x.shape, x.dtype)
    else:  # untouched stand-ins of the right types: Uf and the dx units' buffers
        dx = np.empty((0, 0, 0, 0), x.dtype)
        buffers += [dU_parts[0]] + buffers[:5]
    zero_bias = np.zeros(C, x.dtype)
    dW_buffers, Uf, dx_buffers = buffers[:5], buffers[5], buffers[6:]
    _winograd.backward(dW, db, dx, dy, x, W, pad, m, R, Rx, need_dx, zero_row(x, dy), dU_parts,
                       db_parts, *dW_buffers, Uf, zero_bias, *dx_buffers)
    return (dx if need_dx else None), dW, db


def backward_relu(dy, x, W, pad, y=None, arg=None, need_dx=True, n_threads=None, m=2):
    # The backward pass of forward_relu: dy (N, F, OH, OW) and y, its forward output; or, after the
    # pool, dy (N, F, OH//2, OW//2) and arg -> (dx (N, C, H, W) or None, dW, db)
    _check_tile(m)
    dy, x, W = floats(dy, x, W)
    N, C, H, Wd = x.shape
    F = W.shape[0]
    a = m + 2
    OH, OW = H + 2 * pad - 2, Wd + 2 * pad - 2
    TH, TW = -(-OH // m), -(-OW // m)
    THx, TWx = -(-H // m), -(-Wd // m)
    T = max(1, n_threads or _winograd.max_threads())
    # groups of G whole images, enough to fill a unit (but no fewer groups than threads), cut
    # into equal units of R (Rx) tile rows, each 1 to 2 times the rows that fit in L2 (one unit a
    # group where the group is smaller than two)
    fit = _tile_rows_per_unit(N * TH, TW, C + F, a, T, x.itemsize)
    G = max(1, min(-(-fit // TH), -(-N // T)))
    R = _equal_units(G * TH, fit)
    Rx = _equal_units(G * THx, _tile_rows_per_unit(N * THx, TWx, C + F, a, T, x.itemsize))
    dW, db = np.empty(W.shape, x.dtype), np.empty(F, x.dtype)
    shapes = [(T, G, F, OH, OW), (T, a * a, F, C), (T, F)] + _unit_shapes(T, m, C, F, R, TW)
    if need_dx:
        shapes += [(a * a, C, F)] + _unit_shapes(T, m, F, C, Rx, TWx)
    dz, dU_parts, db_parts, *buffers = _carve("winograd.backward", shapes, x.dtype)
    if need_dx:
        dx = np.empty(x.shape, x.dtype)
    else:  # untouched stand-ins of the right types: Uf and the dx units' buffers
        dx = np.empty((0, 0, 0, 0), x.dtype)
        buffers += [dU_parts[0]] + buffers[:5]
    no_y, no_arg = np.empty((0, 0, 0, 0), x.dtype), np.empty((0, 0, 0, 0), np.int32)
    y = no_y if y is None else y
    arg = no_arg if arg is None else arg
    zero = np.zeros(max(Wd, OW), x.dtype)  # as wide as x's rows and dz's (the dx units' input)
    zero_bias = np.zeros(C, x.dtype)
    dW_buffers, Uf, dx_buffers = buffers[:5], buffers[5], buffers[6:]
    _winograd.backward_relu(dW, db, dx, dy, y, arg, x, W, pad, m, G, R, Rx, need_dx, zero, dz,
                            dU_parts, db_parts, *dW_buffers, Uf, zero_bias, *dx_buffers)
    return (dx if need_dx else None), dW, db
