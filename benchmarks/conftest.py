"""Shared set-up of the benchmark suites (run with ``pytest benchmarks --benchmark-only``).

* ``kernels``: a backend's kernel table, parametrised over every backend; one that cannot
  load here is skipped with its reason. The CUDA simulator is skipped too: it runs every
  GPU thread in Python, so its timings say nothing.
* Threads: FASTNN_NUM_THREADS (default: all cores) for Numba, OpenMP and BLAS together,
  set after the backend is loaded so that the libraries it brought in are limited too.
"""
import pytest

from fastnn import backends, threads

BACKENDS = ("numpy", "numba", "cython", "cuda")


@pytest.fixture(params=BACKENDS)
def kernels(request):
    name = request.param
    reason = backends.available()[name]
    if reason is not None:
        pytest.skip(f"backend {name} unavailable: {reason}")
    K = backends.use(name)  # use, not load: the thread policy follows the active backend
    if getattr(K, "SIMULATOR", False):
        pytest.skip("backend cuda runs in the CUDA simulator here (NUMBA_ENABLE_CUDASIM=1): timings meaningless")
    threads.set_threads()
    return K


def pytest_report_header(config):
    return f"fastnn benchmarks: {threads.current_threads()} threads (FASTNN_NUM_THREADS)"
