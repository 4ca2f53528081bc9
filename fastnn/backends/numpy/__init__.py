"""The pure-NumPy reference backend: the specification every other backend is tested against.

Its kernels live in the modules contract.MODULES names; the fused ones are the composition of
the unfused (fastnn/backends/composed.py)."""
from ..contract import kernels_of

globals().update(kernels_of(__name__))

NAME = "numpy"
