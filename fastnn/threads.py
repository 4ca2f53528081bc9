"""One thread count for Numba, OpenMP (Cython) and BLAS, so they never oversubscribe the cores."""
import sys

from threadpoolctl import threadpool_limits

from . import config
from .errors import ConfigError

_threads = None
_limits = None  # kept alive: the limits hold until set_threads runs again


def set_threads(n: int | None = None) -> int:
    """Use ``n`` threads (default FASTNN_NUM_THREADS, else all cores) everywhere; returns n.

    Call it after the backend is loaded: threadpoolctl limits the BLAS and OpenMP
    libraries that are already in the process.
    """
    global _threads, _limits
    n = config.num_threads() if n is None else int(n)
    if n < 1:
        raise ConfigError(f"threads must be 1 or more, not {n}")
    _limits = threadpool_limits(limits=n)
    if "numba" in sys.modules:  # only a process that uses Numba pays for importing it
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _threads = n
    return n


def current_threads() -> int:
    return _threads if _threads is not None else config.num_threads()
