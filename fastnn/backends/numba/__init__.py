"""The Numba CPU backend: every contract kernel compiled with ``@njit(cache=True)``.

Parallel loops (``prange``) run on Numba's threads, one parallel region per kernel call;
matrix products call SciPy's BLAS sgemm from inside those loops (fastnn/backends/numba/blas.py),
single-threaded, so only one thread pool ever runs (fastnn/threads.py).
Where nothing beats the reference for a kernel, the module says so and uses it.
"""
from ... import config
from . import _cache

# before any kernel module runs its @njit(cache=True) decorators: a cached kernel must be
# recompiled when any file of this backend changes, not only its own (see _cache.py).
_cache.install()

# the kernels call SciPy's BLAS; set it up before it loads (see config.py).
config.quiet_idle_blas_threads()
try:
    import scipy.linalg.cython_blas  # noqa: F401
except ImportError as e:
    from ...errors import BackendUnavailableError
    raise BackendUnavailableError(
        "backend 'numba' needs SciPy: its kernels call BLAS through scipy.linalg.cython_blas; "
        "install it with: pip install scipy") from e

from ..contract import kernels_of  # noqa: E402

globals().update(kernels_of(__name__))  # every contract kernel, from the modules contract.MODULES names
from .conv import CONV_ALGORITHMS  # noqa: E402,F401  (beyond the contract: the algorithms it can force)

NAME = "numba"

from ... import threads  # noqa: E402
threads.apply(NAME)  # BLAS single-threaded from now on: the kernels call it inside prange loops
