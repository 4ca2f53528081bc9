"""Fused layer chains (see fastnn/backends/composed.py, their specification)."""
import sys

from ..composed import fused_kernels

_composed = fused_kernels(sys.modules[__package__])
dense_relu_forward = _composed["dense_relu_forward"]
dense_relu_backward = _composed["dense_relu_backward"]
conv2d_relu_forward = _composed["conv2d_relu_forward"]
conv2d_relu_backward = _composed["conv2d_relu_backward"]
conv2d_relu_pool_forward = _composed["conv2d_relu_pool_forward"]
conv2d_relu_pool_backward = _composed["conv2d_relu_pool_backward"]
