"""Would a one-pass dense backward beat the two BLAS products fastnn makes now?

    python benchmarks/dense_backward_one_pass.py                       # 1 and 2 threads, 300 repeats
    python benchmarks/dense_backward_one_pass.py --repeats 1000 --threads 2
    python benchmarks/dense_backward_one_pass.py --chunks 16,32,64,128,0 --blocks 16   # chunk sweep
    NUMBA_CACHE_DIR=/tmp/nb python benchmarks/dense_backward_one_pass.py  # keep Numba's cache out of the tree

A dense layer y = x @ W + b (x (N, D), W (D, M)) has the backward dx = dy @ W.T, dW = x.T @ dy,
db = dy.sum(0). fastnn's Numba backend (``fastnn.backends.numba.dense_backward``, "blas" below)
made dx and dW as two single-threaded sgemm calls per Numba thread: dx split by rows of N, dW
by rows of D, db by columns (the figures at the end are against that). Since this measurement
it splits both products by columns of D in L2-sized chunks, as ``2sweeps-auto`` below, so
"blas" now times that. The variants here compute all three in ONE sweep instead:

* ``rows-B``: the sweep goes over the rows of x and dy, B rows at a time (small enough for x's
  block to stay in cache): ``dx[blk] = dy[blk] @ W.T``, ``dW_t += x[blk].T @ dy[blk]``,
  ``db_t += dy[blk].sum(0)``; each thread owns a range of rows and a private dW partial (thread
  0's is dW itself, the others are reused scratch), reduced into dW at the end. ``rows-all``
  is the same with one block per thread (B = N / threads).
* ``cols-C``: the sweep goes over the columns of x (the rows of W and dW), C at a time:
  ``dW[c] = x[:, c].T @ dy``, ``dx[:, c] = dy @ W[c].T``; dy (N x M) stays in cache and is read
  once per chunk, x, W, dx and dW are each touched exactly once, and no partials are needed.
  ``cols-all`` is one chunk per thread, ``cols-auto`` sizes C from N and M (fastnn's ``column_chunk``).
  Note that cols-all differs from "blas" only in how dx is split between threads (by columns
  of D, so each thread reads half of W, instead of by rows of N, so each reads all of W): it
  separates that effect from the one of the chunked sweep.
* ``2sweeps-C`` (the control, not one-pass): the same chunks as ``cols-C``, but all of dW's
  first and then all of dx's: two separate passes of small BLAS calls. cols-C against 2sweeps-C
  is the effect of fusing the two products into one pass, everything else equal.
* ``loop``: no BLAS, a hand-written loop over tiles of 16 columns of x (rows of W): for every
  row n of x (four at a time), ``dW[tile] += x[n, tile] (outer) dy[n]`` and
  ``dx[n, tile] = W[tile] @ dy[n]``, so each element of x, W, dx, dW is read or written once and
  the tile of dW and W stays in L1.

Each variant is first checked against NumPy in float64 (dx, dW, db, float32 tolerance), then
warmed up (Numba's compile time is excluded), then timed against "blas" at the dense shapes of
the named models. Runs alternate between the functions (the order rotates each repeat, so a slow
spell of a shared machine hits all of them); one run times enough calls to last about 1 ms and
counts their mean. The table shows medians over the repeats, in ms per call, the ratio
variant / blas of the medians (< 1: the variant is faster), the same ratio of the 10th
percentiles and of the minima (what a quiet machine would show: with as many threads as cores,
a competing process stalls a whole parallel region and drags every function's median towards
the same time-slice), and, as a measure of noise, blas's spread p25-p75 over its median.

What it showed (2-core AMD EPYC VM, OpenBLAS 0.3.30, Nov 2026): rows-B and loop are 1.3-2.2x
slower than blas everywhere, rows-all is level at 1 thread and up to 1.3x slower at 2 (the dW
partials and their reduction). cols-auto is 8-13% faster at 1 thread and 11-32% at 2 on the
big layers, but 2sweeps-auto is exactly as fast: the gain is from splitting dx by columns of D
and from ~64-96-column sgemm calls, not from doing the products in one pass.

Threads: ``import fastnn.backends.numba`` makes BLAS single-threaded (fastnn/threads.py); the
script sets Numba's thread count for each ``--threads`` value and passes it into the compiled
functions (numba.get_num_threads() inside them would keep them out of Numba's disk cache).
"""
import argparse
import math
import os
import statistics
import sys
import time

import numba
import numpy as np
from numba import njit, prange

import fastnn.backends.numba as K
from fastnn.backends.numba._common import FAST, f32, scratch
from fastnn.backends.numba.blas import gemm
from fastnn.backends.numba.dense import column_chunk

SHAPES = [
    # (label, N, D, M): the Dense layers whose backward dominates, at the models' batch sizes
    ("simple-cnn", 100, 4320, 100),
    ("pytorch-net", 64, 9216, 128),
    ("deep-cnn", 100, 1024, 50),
    ("mlp 784", 100, 784, 100),
    ("mlp 100", 100, 100, 100),
    ("simple-cnn b256", 256, 4320, 100),
]
TILE = 16  # columns of x per tile in the hand-written loop: a 16 x M tile of W and of dW stays in L1


# ---------------------------------------------------------------- one pass over the rows of x

@njit(cache=True, parallel=True, fastmath=FAST)
def _rows(dx, dW, db, dy, x, W, partials, db_partials, T, B):
    # dy (N, M), x (N, D), W (D, M) -> dx (N, D), dW (D, M), db (M,)
    # partials (T - 1, D, M), db_partials (T, M): scratch; B rows per block (0: all of a thread's)
    N, D = x.shape
    M = dy.shape[1]
    for t in prange(T):
        lo, hi = t * N // T, (t + 1) * N // T
        acc = dW if t == 0 else partials[t - 1]  # this thread's dW partial
        db_t = db_partials[t]
        db_t[:] = 0.0
        step = hi - lo if B <= 0 else B
        beta = 0.0
        if hi == lo:
            acc[:, :] = 0.0
        for n0 in range(lo, hi, step):
            n1 = min(n0 + step, hi)
            # dx[n0:n1] = dy[n0:n1] @ W.T ; acc (+)= x[n0:n1].T @ dy[n0:n1] ; db_t += dy[n0:n1].sum(0)
            gemm(dx[n0:n1], dy[n0:n1], W, 1.0, 0.0, False, True)
            gemm(acc, x[n0:n1], dy[n0:n1], 1.0, beta, True, False)
            beta = 1.0
            for n in range(n0, n1):
                for m in range(M):
                    db_t[m] += dy[n, m]
    # reduce: dW += partials[0] + ... , split over rows of D; db = sum of the db partials
    for t in prange(T):
        lo, hi = t * D // T, (t + 1) * D // T
        for p in range(T - 1):
            P = partials[p]
            for d in range(lo, hi):
                for m in range(M):
                    dW[d, m] += P[d, m]
    for m in range(M):
        s = 0.0
        for t in range(T):
            s += db_partials[t, m]
        db[m] = s


def rows_backward(dy, x, W, T, B):
    dy, x, W = f32(dy), f32(x), f32(W)
    dx, dW, db = np.empty_like(x), np.empty_like(W), np.empty(W.shape[1], np.float32)
    T = max(1, min(T, x.shape[0]))
    partials = scratch("onepass dW partials", (T - 1,) + W.shape)
    db_partials = scratch("onepass db partials", (T, W.shape[1]))
    _rows(dx, dW, db, dy, x, W, partials, db_partials, T, B)
    return dx, dW, db


# ---------------------------------------------------------------- one pass over the columns of x

@njit(cache=True, parallel=True, fastmath=FAST)
def _cols(dx, dW, db, dy, x, W, T, C, fused):
    # dy (N, M), x (N, D), W (D, M) -> dx (N, D), dW (D, M), db (M,); C columns of x per chunk (0: all)
    # fused: both products chunk by chunk (one sweep); else all of dW's chunks, then all of dx's
    N, D = x.shape
    M = dy.shape[1]
    for t in prange(T):
        lo, hi = t * D // T, (t + 1) * D // T
        step = max(1, hi - lo) if C <= 0 else C
        for d0 in range(lo, hi, step):
            d1 = min(d0 + step, hi)
            # dW[d0:d1] = x[:, d0:d1].T @ dy ; dx[:, d0:d1] = dy @ W[d0:d1].T
            gemm(dW[d0:d1], x[:, d0:d1], dy, 1.0, 0.0, True, False)
            if fused:
                gemm(dx[:, d0:d1], dy, W[d0:d1], 1.0, 0.0, False, True)
        if not fused:
            for d0 in range(lo, hi, step):
                d1 = min(d0 + step, hi)
                gemm(dx[:, d0:d1], dy, W[d0:d1], 1.0, 0.0, False, True)
        # db[lo:hi] = dy[:, lo:hi].sum(0), split over columns of dy
        lo, hi = t * M // T, (t + 1) * M // T
        db[lo:hi] = 0.0
        for n in range(N):
            for m in range(lo, hi):
                db[m] += dy[n, m]


def cols_backward(dy, x, W, T, C, fused=True):
    dy, x, W = f32(dy), f32(x), f32(W)
    if C < 0:
        C = column_chunk(x.shape[0], W.shape[1])  # what fastnn's dense_backward uses
    dx, dW, db = np.empty_like(x), np.empty_like(W), np.empty(W.shape[1], np.float32)
    _cols(dx, dW, db, dy, x, W, T, C, fused)
    return dx, dW, db


# ---------------------------------------------------------------- hand-written loop, no BLAS

@njit(cache=True, parallel=True, fastmath=FAST)
def _loop(dx, dW, db, dy, x, W, T):
    # dy (N, M), x (N, D), W (D, M) -> dx (N, D), dW (D, M), db (M,); tiles of TILE columns of x
    N, D = x.shape
    M = dy.shape[1]
    n_tiles = (D + TILE - 1) // TILE
    for t in prange(T):
        for tile in range(t * n_tiles // T, (t + 1) * n_tiles // T):
            d0, d1 = tile * TILE, min((tile + 1) * TILE, D)
            for d in range(d0, d1):
                for m in range(M):
                    dW[d, m] = 0.0
            n = 0
            while n + 4 <= N:  # four rows of x and dy at a time: one load and store of dW[d] per four
                g0, g1, g2, g3 = dy[n], dy[n + 1], dy[n + 2], dy[n + 3]
                for d in range(d0, d1):
                    x0, x1, x2, x3 = x[n, d], x[n + 1, d], x[n + 2, d], x[n + 3, d]
                    w, gw = W[d], dW[d]
                    a0 = a1 = a2 = a3 = np.float32(0.0)
                    for m in range(M):
                        gw[m] += x0 * g0[m] + x1 * g1[m] + x2 * g2[m] + x3 * g3[m]
                        a0 += w[m] * g0[m]
                        a1 += w[m] * g1[m]
                        a2 += w[m] * g2[m]
                        a3 += w[m] * g3[m]
                    dx[n, d], dx[n + 1, d], dx[n + 2, d], dx[n + 3, d] = a0, a1, a2, a3
                n += 4
            while n < N:
                g0 = dy[n]
                for d in range(d0, d1):
                    x0 = x[n, d]
                    w, gw = W[d], dW[d]
                    a0 = np.float32(0.0)
                    for m in range(M):
                        gw[m] += x0 * g0[m]
                        a0 += w[m] * g0[m]
                    dx[n, d] = a0
                n += 1
        lo, hi = t * M // T, (t + 1) * M // T
        db[lo:hi] = 0.0
        for n in range(N):
            for m in range(lo, hi):
                db[m] += dy[n, m]


def loop_backward(dy, x, W, T):
    dy, x, W = f32(dy), f32(x), f32(W)
    dx, dW, db = np.empty_like(x), np.empty_like(W), np.empty(W.shape[1], np.float32)
    _loop(dx, dW, db, dy, x, W, T)
    return dx, dW, db


# ---------------------------------------------------------------- harness

def variants(T, blocks, chunks, split_chunk=-1):
    """name -> function (dy, x, W) -> (dx, dW, db); "blas" is fastnn's kernel, the reference.
    A block or chunk of 0 is "all": one per thread."""
    fns = {"blas": K.dense_backward}
    for B in blocks:
        fns[f"rows-{B or 'all'}"] = lambda dy, x, W, B=B: rows_backward(dy, x, W, T, B)
    for C in chunks:
        fns[f"cols-{'auto' if C < 0 else C or 'all'}"] = lambda dy, x, W, C=C: cols_backward(dy, x, W, T, C)
    if split_chunk is not None:
        fns[f"2sweeps-{'auto' if split_chunk < 0 else split_chunk or 'all'}"] = (
            lambda dy, x, W: cols_backward(dy, x, W, T, split_chunk, fused=False))
    fns["loop"] = lambda dy, x, W: loop_backward(dy, x, W, T)
    return fns


def check(name, fn, dy, x, W):
    """dx, dW, db of ``fn`` against NumPy in float64, to float32 tolerance."""
    dy64, x64, W64 = dy.astype(np.float64), x.astype(np.float64), W.astype(np.float64)
    want = (dy64 @ W64.T, x64.T @ dy64, dy64.sum(0))
    for _ in range(2):  # twice: scratch reused and per-thread state reset between calls
        got = fn(dy, x, W)
        for label, g, w in zip(("dx", "dW", "db"), got, want):
            assert g.dtype == np.float32 and g.shape == w.shape, (name, label, g.dtype, g.shape)
            # a sum of K products of unit normals has size ~ sqrt(K): compare relative to the largest
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * np.abs(w).max(), err_msg=f"{name} {label}")


def time_calls(fn, args, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn(*args)
    return (time.perf_counter() - t0) / inner


def quartiles(values):
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def p10(values):
    return statistics.quantiles(values, n=10, method="inclusive")[0]


def bench_shape(fns, N, D, M, repeats, rng, target_s=1e-3):
    x = rng.standard_normal((N, D)).astype(np.float32)
    W = (rng.standard_normal((D, M)) / math.sqrt(D)).astype(np.float32)
    dy = rng.standard_normal((N, M)).astype(np.float32)
    for name, fn in fns.items():
        check(name, fn, dy, x, W)  # compiles (or loads the cache) too
    inner = {}
    for name, fn in fns.items():  # warm up, and enough calls per run to last ~target_s
        for _ in range(5):
            fn(dy, x, W)
        once = min(time_calls(fn, (dy, x, W), 3) for _ in range(3))
        inner[name] = max(1, math.ceil(target_s / once))
    names = list(fns)
    samples = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: A B C, B C A, ...
        if r % 2:
            order.reverse()
        for name in order:
            samples[name].append(time_calls(fns[name], (dy, x, W), inner[name]))
    return samples


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=300, help="timed runs of each function per shape (default 300)")
    p.add_argument("--threads", default="1,2", help="Numba thread counts, comma-separated (default 1,2)")
    p.add_argument("--blocks", default="16,0",
                   help="rows of x per block in rows-B, comma-separated; 0: all (default 16,0)")
    p.add_argument("--chunks", default="64,-1,0",
                   help="columns of x per chunk in cols-C, comma-separated; 0: all, -1: column_chunk (default 64,-1,0)")
    p.add_argument("--split-chunk", type=int, default=-1,
                   help="chunk of the 2sweeps control (cols-C in two sweeps, not one); -1: auto (default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    thread_counts = [int(t) for t in args.threads.split(",")]
    blocks = [int(b) for b in args.blocks.split(",") if b]
    chunks = [int(c) for c in args.chunks.split(",") if c]
    if max(thread_counts) > numba.config.NUMBA_NUM_THREADS:
        p.error(f"at most {numba.config.NUMBA_NUM_THREADS} Numba threads here")

    from threadpoolctl import threadpool_info
    blas = sorted({(i["internal_api"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"})
    print(f"numba {numba.__version__}, numpy {np.__version__}, {os.cpu_count()} cores, BLAS threads {blas}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"median ms per call over {args.repeats} alternating runs; ratio = variant / blas of the medians "
          f"(< 1: faster); p10, min = the same ratio of the 10th percentiles, of the minima "
          f"(quiet-machine estimates); spread = blas's p25-p75 over its median (noise)")
    rng = np.random.default_rng(args.seed)
    for T in thread_counts:
        numba.set_num_threads(T)
        fns = variants(T, blocks, chunks, args.split_chunk)
        others = [n for n in fns if n != "blas"]
        print(f"\n== {T} thread(s)")
        print(f"{'shape (N, D, M)':<34}{'blas ms':>9} {'spread':>7}" + "".join(f"{n:>25}" for n in others))
        print(f"{'':<34}{'':>9} {'':>7}" + "".join(f"{'ms ratio  p10  min':>25}" for n in others))
        for label, N, D, M in SHAPES:
            s = bench_shape(fns, N, D, M, args.repeats, rng)
            base = statistics.median(s["blas"])
            q1, q3 = quartiles(s["blas"])
            row = f"{label + f' ({N}, {D}, {M})':<34}{base * 1e3:9.3f} {(q3 - q1) / base:6.1%}"
            base10 = p10(s["blas"])
            for n in others:
                med = statistics.median(s[n])
                row += f"{med * 1e3:9.3f} {med / base:5.2f} {p10(s[n]) / base10:4.2f} {min(s[n]) / min(s['blas']):4.2f}"
            print(row, flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
