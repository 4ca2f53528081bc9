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
import warnings

from threadpoolctl import threadpool_limits

from . import config
from .errors import ConfigError

SELF_THREADED = ("numba", "cython")  # backends that parallelise around single-threaded BLAS

_threads = None
_limits = None  # kept alive: the limits hold until set_threads runs again


def set_threads(n: int | None = None) -> int:
    """Use ``n`` threads (default FASTNN_NUM_THREADS, else the usable cores: config.usable_cpus)
    everywhere; returns the number it uses, and warns if that is fewer than asked for.

    Call it after the backend is loaded: threadpoolctl limits the BLAS and OpenMP
    libraries that are already in the process.
    """
    global _threads
    n = config.num_threads() if n is None else int(n)
    if n < 1:
        raise ConfigError(f"threads must be 1 or more, not {n}")
    most = numba_thread_limit()
    if most is not None and n > most:
        warnings.warn(f"fastnn: {n} threads asked for, {most} used: Numba started with NUMBA_NUM_THREADS={most} "
                      f"(the cores it saw); set NUMBA_NUM_THREADS={n} before Python starts to allow more",
                      RuntimeWarning, stacklevel=2)
        n = most
    _threads = n
    apply()
    return n


def numba_thread_limit() -> int | None:
    """The most threads Numba can run in this process (fixed when it loads); None if not loaded."""
    if "numba" not in sys.modules:
        return None
    import numba
    return numba.config.NUMBA_NUM_THREADS


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
    most = numba_thread_limit()  # only a process that uses Numba pays for importing it
    if most is not None:
        import numba
        numba.set_num_threads(min(n, most))


def current_threads() -> int:
    return _threads if _threads is not None else config.num_threads()
