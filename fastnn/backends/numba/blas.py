"""sgemm callable from compiled (``@njit``) code, also inside ``prange`` loops.

Numba's own ``np.dot`` cannot accumulate (``beta = 1``), cannot take a transposed or strided
operand without a copy, and must not run inside a parallel loop while BLAS has threads of its
own. This module calls SciPy's BLAS ``sgemm`` directly, the same routine ``np.dot`` ends in:

* the address of ``scipy.linalg.cython_blas.sgemm`` is registered with LLVM under the symbol
  ``fastnn_sgemm`` when this module is imported, and compiled code calls that symbol, so
  functions that use it can be cached on disk (the address is looked up again in every
  process, never baked into the cache);
* BLAS is column-major and fastnn's arrays are row-major. A row-major (r, c) matrix is a
  column-major (c, r) one, so ``C = op(A) @ op(B)`` is asked of BLAS as
  ``C.T = op(B).T @ op(A).T``: the operands swap places (as in fastnn_ext/_common.pxd).

Inside a ``prange`` loop BLAS must be single-threaded: ``fastnn.threads.set_threads`` limits
BLAS to one thread whenever a compiled backend is active, and ``parallel_gemm`` below splits
a large product over Numba's threads instead.
"""
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from ._common import PRANGE

llvm.add_symbol("fastnn_sgemm", get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))

_N, _T = np.int8(ord("N")), np.int8(ord("T"))


@intrinsic
def _sgemm(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """The Fortran call ``sgemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)``:
    the matrices come as addresses (``array.ctypes.data``), everything else by value here and
    by reference (a stack slot) to BLAS."""
    sig = types.void(types.int8, types.int8, types.int32, types.int32, types.int32, types.float32,
                     types.intp, types.int32, types.intp, types.int32, types.float32, types.intp, types.int32)

    def codegen(context, builder, signature, args):
        pointer = ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [pointer] * 13),
                                            "fastnn_sgemm")
        argv = []
        for value, ty in zip(args, signature.args):
            if ty == types.intp:  # a matrix address
                argv.append(builder.inttoptr(value, pointer))
            else:                 # a scalar, passed by reference
                argv.append(builder.bitcast(cgutils.alloca_once_value(builder, value), pointer))
        builder.call(fn, argv)
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True, nogil=True)
def gemm(c, a, b, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
    """c = alpha * op(a) @ op(b) + beta * c, float32, with op(a) = a.T if trans_a.

    Every operand is a 2-D array whose rows may be strided (a slice of a bigger array) but
    whose elements within a row are contiguous; c (M, N), op(a) (M, K), op(b) (K, N).
    Writes only c.
    """
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    if M == 0 or N == 0:
        return
    if K == 0:  # BLAS leaves c alone when k = 0; the product is zero, so c = beta * c
        for i in range(M):
            for j in range(N):
                c[i, j] = beta * c[i, j] if beta != 0.0 else 0.0
        return
    # c.T = op(b).T @ op(a).T in column-major: b first, then a
    _sgemm(_T if trans_b else _N, _T if trans_a else _N, np.int32(N), np.int32(M), np.int32(K),
           np.float32(alpha), b.ctypes.data, np.int32(b.strides[0] // 4), a.ctypes.data,
           np.int32(a.strides[0] // 4), np.float32(beta), c.ctypes.data, np.int32(c.strides[0] // 4))


@njit(cache=True, parallel=PRANGE)
def parallel_gemm(c, a, b, n_threads, beta=0.0, trans_a=False, trans_b=False):
    """c = op(a) @ op(b) + beta * c, the rows of c split evenly into ``n_threads`` blocks
    (pass numba.get_num_threads(): called in here it would keep the function out of the disk
    cache), each one single-threaded sgemm, all in one parallel region."""
    M = c.shape[0]
    T = max(1, min(n_threads, M))
    for t in prange(T):
        lo, hi = t * M // T, (t + 1) * M // T
        # c[lo:hi] = op(a)[lo:hi] @ op(b) + beta * c[lo:hi]
        if trans_a:
            gemm(c[lo:hi], a[:, lo:hi], b, 1.0, beta, True, trans_b)
        else:
            gemm(c[lo:hi], a[lo:hi], b, 1.0, beta, False, trans_b)
