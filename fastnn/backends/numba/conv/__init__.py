"""Convolution with Numba: four algorithms behind the contract, and the one function that
chooses between them per layer shape. Mirrors fastnn/backends/numpy/conv.py.

=============  ===================================================  ===========================
algorithm      what it does                                         where it applies
=============  ===================================================  ===========================
``im2col``     one image's columns in L2, one sgemm per image       any shape
``direct``     every filter tap one vectorised multiply-add         stride 1 (forced only)
``winograd``   F(2x2, 3x3): 16 multiplies where im2col does 36      3x3, stride 1, pad <= 2
``winograd4``  F(4x4, 3x3): 36 multiplies where im2col does 144     3x3, stride 1, pad <= 2
=============  ===================================================  ===========================

``conv2d_algorithm`` is the choice (like cuDNN's algorithm choice): ``table_algorithm``, measured
on one machine, by default; with FASTNN_TUNE=1, the fastest of the algorithms that apply, timed on
this machine the first time a shape is used (fastnn/backends/tuning.py; cached on disk).
FASTNN_CONV_ALGO forces one algorithm wherever it applies (tests run every algorithm on every
shape family that way), ``conv2d_choice`` says what was chosen and why, and the benchmarks'
``--profile`` prints it for each layer. Winograd computes the same
convolution with fewer multiplications, at a float32 rounding error no larger than im2col's for
F(2x2, 3x3) and about 10x larger (still ~1e-5 relative) for F(4x4, 3x3): see
tests/backends/test_winograd.py.
"""
import numba

from ... import tuning
from .._common import f32, scratch
from . import direct, winograd
from . import im2col as per_image
from .im2col import col2im, im2col  # noqa: F401  the contract's whole-batch im2col / col2im

CONV_ALGORITHMS = ("im2col", "direct", "winograd", "winograd4")
WINOGRAD_TILE = {"winograd": 2, "winograd4": 4}  # m of F(m x m, 3x3)


def applies(algorithm, x_shape, w_shape, stride, pad):
    """Whether ``algorithm`` can compute this convolution."""
    if algorithm == "direct":
        return stride == 1
    if algorithm in WINOGRAD_TILE:
        return winograd.applies(x_shape, w_shape, stride, pad)
    return algorithm == "im2col"


def table_algorithm(x_shape, w_shape, stride, pad):
    """The built-in table: the choice unless FASTNN_TUNE=1 times the candidates, measured
    per layer of the MNIST nets on one machine (2 cores, AVX-512, forward plus backward;
    `python benchmarks/train_throughput.py --profile` shows it per layer). On an AVX2 host it
    was wrong (winograd4 for deep-cnn's 16->16 layer was its slowest block there): the tuner
    decides per machine.

    * one input channel (every net's first layer): im2col. Fused with its ReLU (and pool), at
      2 threads, forward / backward ms: simple-cnn 1.28 / 1.45 against the direct loops'
      1.62 / 1.77, pytorch-net 0.33 / 0.44 against 0.61 / 0.87, deep-cnn 0.38 / 0.45 against
      0.64 / 0.81. The GEMM's inner dimension is only KH*KW, but the direct loops load and
      store their accumulator for every few multiply-adds; Winograd's transforms cost more than
      the 9 taps they save.
    * 3x3, stride 1, C > 1: Winograd, 1.4-2.4x faster than im2col on every such layer.
      F(4x4, 3x3) from 24x24 outputs up (pytorch-net's 32->64, deep-cnn's 16->16 at 28x28:
      about 15% faster than F(2x2) there); on smaller maps F(2x2, 3x3), whose tiles waste
      less at the ragged edges and whose transforms are cheaper.
    * anything else (stride 2, other kernel sizes): im2col, one image at a time.
    """
    C, H, W = x_shape[1:]
    if C > 1 and winograd.applies(x_shape, w_shape, stride, pad):
        large = (H + 2 * pad - 2) * (W + 2 * pad - 2) >= 24 * 24
        return "winograd4" if large else "winograd"
    return "im2col"


def _timed_step(algorithm, x, W, b, stride, pad, dy):
    # what the tuner times: one forward and one backward pass (dx and dW) of ``algorithm`` itself
    _, cache = _forward(algorithm, x, W, b, stride, pad)
    conv2d_backward(dy, cache)


# direct is forced only: slower than im2col on every layer of the nets on both kinds of host, and
# timing it would first compile its kernels (seconds of a first run) to learn that again
TUNED_ALGORITHMS = ("im2col", "winograd", "winograd4")
_tuner = tuning.Tuner("numba", CONV_ALGORITHMS, applies, table_algorithm, _timed_step, numba.get_num_threads,
                      timed=TUNED_ALGORITHMS)
conv2d_choice = _tuner.choice        # (algorithm, source, ms): what a shape runs, and why (tuning.Choice)
conv2d_algorithm = _tuner.algorithm  # the contract's: forced -> only -> table, or tuned here


def conv2d_forward(x, W, b, stride, pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)
    x, W, b = f32(x), f32(W), f32(b)
    return _forward(conv2d_algorithm(x.shape, W.shape, stride, pad), x, W, b, stride, pad)


def _forward(algorithm, x, W, b, stride, pad):
    # float32 x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW), cache; runs ``algorithm``
    if algorithm == "direct":
        y, xp, _ = direct.forward(x, W, b, pad)
        return y, (algorithm, xp, W, stride, pad)
    if algorithm in WINOGRAD_TILE:
        y = winograd.forward(x, W, b, pad, numba.get_num_threads(), WINOGRAD_TILE[algorithm])
    else:
        y, _ = per_image.forward(x, W, b, stride, pad, numba.get_num_threads(), scratch)
    return y, (algorithm, x, W, stride, pad)


def conv2d_backward(dy, cache, need_dx=True):
    # dy (N, F, OH, OW) -> dx (N, C, H, W) or None, dW (F, C, KH, KW), db (F,)
    algorithm, x, W, stride, pad = cache
    dy = f32(dy)
    if algorithm == "direct":
        return direct.backward(dy, x, W, pad, need_dx)
    if algorithm in WINOGRAD_TILE:
        return winograd.backward(dy, x, W, pad, need_dx, numba.get_num_threads(), WINOGRAD_TILE[algorithm])
    return per_image.backward(dy, x, W, stride, pad, need_dx, numba.get_num_threads(), scratch)
