"""Batch normalisation. Mirrors fastnn/backends/numpy/norm.py.

None of the target models (simple-cnn, pytorch-net) uses batch norm, and the reference is a
handful of vectorised NumPy reductions: nothing here beats it by enough to be worth a
second copy of the maths, so every kernel is the reference's, in plain sight.
"""
from ..numpy import norm as reference

batchnorm_forward = reference.batchnorm_forward          # nothing faster: vectorised reductions
batchnorm_backward = reference.batchnorm_backward        # nothing faster: vectorised reductions
batchnorm_inference = reference.batchnorm_inference      # nothing faster: one broadcast expression
running_average_update = reference.running_average_update  # nothing faster: two in-place ops on (D,)
