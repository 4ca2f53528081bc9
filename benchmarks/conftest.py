"""Shared set-up of the kernel benchmarks: one backend per pytest process.

Why one per process: in one process the backends' thread pools interfere (OpenBLAS's threads,
woken by the numpy backend, spin next to Numba's and OpenMP's; each compiled backend leaves BLAS
limited to one thread for the next), so kernels measured one after another in one process are
not the kernels a training run gets. ``--backend NAME`` (default: FASTNN_BACKEND, else numba)
picks the one backend this process measures; the others are compared through saved runs:

    S=.benchmarks/kernels                          # where the runs are saved (any directory)
    for b in numpy numba cython; do
        pytest benchmarks --benchmark-only --backend $b --benchmark-storage=$S --benchmark-save=$b
    done
    pytest-benchmark --storage $S compare '*_numpy' '*_numba' '*_cython' --group-by=group \
        --columns=min,median,iqr,rounds --sort=name
    python benchmarks/kernel_table.py $S           # the same runs as README's markdown table

``--group-by=group`` puts the backends' rows of one kernel on one shape (benchmark.group is
"<model> | <layer> | <kernel>", the same in every backend's run) in one table. Or, while one run
goes: ``pytest benchmarks --benchmark-only --backend cython --benchmark-storage=$S
--benchmark-compare=0001 --benchmark-group-by=group`` sets it beside saved run 0001.

* ``kernels``: the chosen backend's kernel table. A backend that cannot load here skips every
  benchmark with its reason. The CUDA simulator is skipped too: it runs every GPU thread in
  Python, so its timings say nothing.
* Threads: FASTNN_NUM_THREADS (default: all usable cores) for Numba, OpenMP and BLAS together,
  set after the backend is loaded so that the libraries it brought in are limited too.
* Every saved run's machine_info carries fastnn.machine.machine_facts(), the backend and the
  threads (the BLAS rows as this process runs them), so two runs can be compared honestly.
"""
import pytest

from fastnn import backends, config, threads
from fastnn.errors import BackendUnavailableError


def pytest_addoption(parser):
    parser.addoption("--backend", choices=config.BACKENDS, default=None,
                     help="the one backend this process benchmarks (default: $FASTNN_BACKEND, else "
                          f"{config.DEFAULT_RULE}); run one process per backend and compare saved runs")


def chosen_backend(pytest_config):
    return pytest_config.getoption("--backend") or config.backend_name()


@pytest.fixture(scope="session")
def kernels(pytestconfig):
    name = chosen_backend(pytestconfig)
    try:
        K = backends.use(name)  # use, not load: the thread policy follows the active backend
    except (BackendUnavailableError, ImportError) as e:  # ImportError: a broken build
        pytest.skip(f"backend {name} unavailable: {e}")
    if getattr(K, "SIMULATOR", False):
        pytest.skip("backend cuda runs in the CUDA simulator here (NUMBA_ENABLE_CUDASIM=1): timings meaningless")
    threads.set_threads()
    return K


def pytest_report_header(config):
    return (f"fastnn benchmarks: backend {chosen_backend(config)} only (--backend), "
            f"{threads.current_threads()} threads (FASTNN_NUM_THREADS)")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Kept in every saved run: what the numbers depend on besides the code."""
    from fastnn.machine import machine_facts

    machine_info["fastnn"] = machine_facts(threads.current_threads()) | {"backend": chosen_backend(config)}
