"""One thread count for Numba, OpenMP (Cython) and BLAS, so they never oversubscribe the cores.

The compiled backends (numba, cython) split every kernel over their own threads and call
BLAS from inside those parallel loops, one single-threaded sgemm per block: one parallel
region per kernel call. So while one of them is active BLAS gets one thread, and Numba and
OpenMP get ``n``. The numpy backend has no threads of its own: BLAS gets ``n``.
Loading a compiled backend applies this at once (its kernels must never run next to a
multi-threaded BLAS, whether or not ``set_threads`` was called), and ``backends.use``
re-applies it when it switches backends.
"""
import sys

from threadpoolctl import threadpool_limits

from . import config
from .errors import ConfigError

SELF_THREADED = ("numba", "cython")  # backends that parallelise around single-threaded BLAS

_threads = None
_limits = None  # kept alive: the limits hold until set_threads runs again


def set_threads(n: int | None = None) -> int:
    """Use ``n`` threads (default FASTNN_NUM_THREADS, else all cores) everywhere; returns n.

    Call it after the backend is loaded: threadpoolctl limits the BLAS and OpenMP
    libraries that are already in the process.
    """
    global _threads
    n = config.num_threads() if n is None else int(n)
    if n < 1:
        raise ConfigError(f"threads must be 1 or more, not {n}")
    _threads = n
    apply()
    return n


def blas_threads(backend_name: str, n: int) -> int:
    """BLAS's threads when ``backend_name`` runs with ``n`` threads."""
    return 1 if backend_name in SELF_THREADED else n


def apply(backend_name: str | None = None):
    """(Re)apply the thread counts for ``backend_name`` (default: the active backend)."""
    global _limits
    if backend_name is None:
        from . import backends
        backend_name = backends._active.NAME if backends._active is not None else config.backend_name()
    n = current_threads()
    _limits = threadpool_limits(limits={"blas": blas_threads(backend_name, n), "openmp": n})
    if "numba" in sys.modules:  # only a process that uses Numba pays for importing it
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def current_threads() -> int:
    return _threads if _threads is not None else config.num_threads()
