"""Array movement for the CPU: the data already lives in host memory. Mirrors fastnn/backends/numpy/arrays.py.

Nothing here computes: the reference's one-liners are already the fastest way.
"""
from ..numpy import arrays as reference

to_device = reference.to_device  # nothing faster: identity (contiguous) on the CPU
to_host = reference.to_host      # nothing faster: identity on the CPU
zeros = reference.zeros          # nothing faster: np.zeros is a calloc
gather = reference.gather        # nothing faster: np.take copies 100 rows at memory speed
