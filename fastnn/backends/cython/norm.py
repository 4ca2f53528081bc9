"""Batch normalisation. Mirrors ../numpy/norm.py.

Neither MNIST net the benchmarks train uses batch norm, so the forward/backward/inference
passes are the reference's own NumPy code (already whole-array operations); only the
running-average update, which runs every step, is compiled (fastnn_ext/_optim.pyx).
"""
from fastnn_ext import _optim

from ..numpy import norm as reference
from ._prep import flat_inplace, flat_like

batchnorm_forward = reference.batchnorm_forward      # reference: not in the benchmarked nets
batchnorm_backward = reference.batchnorm_backward    # reference: not in the benchmarked nets
batchnorm_inference = reference.batchnorm_inference  # reference: not in the benchmarked nets


def running_average_update(avg, value, momentum):
    # avg = momentum * avg + (1 - momentum) * value, in place
    flat = flat_inplace(avg, "avg")
    _optim.running_average_update(flat, flat_like(value, flat, "value"), momentum)
