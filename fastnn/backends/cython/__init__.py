"""The Cython backend: the compiled extension fastnn_ext (typed memoryviews, nogil,
OpenMP prange, BLAS from SciPy's cython_blas), behind the same module names as the
NumPy reference. Kernels kept from the reference say so in their module.
"""
from ... import config

config.quiet_idle_blas_threads()  # before fastnn_ext loads SciPy's BLAS (see config.py)
try:
    from fastnn_ext import (_activation, _arrays, _augment, _conv, _dense, _loss, _optim,  # noqa: F401
                            _pool, _winograd)
except ImportError as e:
    from ...errors import BackendUnavailableError

    raise BackendUnavailableError(
        f"the cython backend needs the compiled extension fastnn_ext, which cannot be "
        f"imported ({e}). Build it with `pip install -e .` (or `python setup.py build_ext "
        f"--inplace`) from the fastnn source tree; that needs a C compiler (with OpenMP for "
        f"threads), Cython and SciPy") from e

from ..contract import kernels_of  # noqa: E402

globals().update(kernels_of(__name__))  # every contract kernel, from the modules contract.MODULES names
from .conv import CONV_ALGORITHMS  # noqa: E402,F401  (beyond the contract: the algorithms it can force)

NAME = "cython"
OPENMP = _conv.OPENMP  # beyond the contract: False for the serial build of fastnn_ext (one thread)

from ... import threads  # noqa: E402
threads.apply(NAME)  # BLAS single-threaded from now on: the kernels call it inside OpenMP loops
