"""Test set-up shared by every test.

* Numba's CUDA simulator is switched on before anything imports numba, unless the
  machine has an NVIDIA GPU: then the same CUDA tests run on the device.
* ``candidate`` runs a test once per compiled backend (numba, cython, cuda). A backend that
  cannot load here is skipped with its reason; under CI (CI=true) that is a failure instead,
  so a green CI run means every backend really ran.
* The terminal summary counts the tests that ran per backend: a test counts for the backends
  its fixtures loaded only once its body has run without skipping (a cuda case that skips
  itself in the simulator, say, is not "ran").
* FASTNN_TUNE=0 (unless set): the suite checks numbers, not speed, so every convolution runs the
  backend's built-in algorithm table, the same on every machine; the tuner has its own tests
  (tests/backends/test_tuning.py), which switch it on.
"""
import collections
import os
from pathlib import Path

if not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("FASTNN_TUNE", "0")

import numpy as np
import pytest

from fastnn import backends

COMPILED_BACKENDS = ("numba", "cython", "cuda")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SIMULATED_CUDA = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"

# The backends the current test's fixtures loaded (candidate, reference, test_winograd's twin
# add to it); committed to _ran_total by pytest_runtest_makereport once the body has run.
_ran = collections.Counter()
_ran_total = collections.Counter()


def load_or_skip(name):
    reason = backends.available()[name]
    if reason is not None:
        if IN_CI:
            pytest.fail(f"backend {name} must run in CI but cannot load: {reason}")
        pytest.skip(f"backend {name} unavailable: {reason}")
    return backends.load(name)


@pytest.fixture(params=COMPILED_BACKENDS)
def candidate(request):
    """A compiled backend's kernel table, checked against ``reference``."""
    table = load_or_skip(request.param)
    _ran[request.param] += 1
    return table


@pytest.fixture
def reference():
    _ran["numpy"] += 1
    return backends.load("numpy")


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture
def mnist_dir():
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        if IN_CI:
            pytest.fail(f"the real MNIST files must be at {MNIST_DIR} in CI")
        pytest.skip(f"real MNIST files not found at {MNIST_DIR}")
    return MNIST_DIR


@pytest.fixture(autouse=True)
def _restore_backend():
    """Tests that switch backends with backends.use() leave the previous one active."""
    before = backends._active
    yield
    backends._active = before


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _ran.clear()  # a fresh tally for each test, before its fixtures are set up


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    # loading a backend is not running a test: the body must have run, not skipped itself
    # (an xfail ran its body too); a failure did run, and is reported on its own
    if report.when == "call" and (not report.skipped or hasattr(report, "wasxfail")):
        _ran_total.update(_ran)
    return report


def pytest_terminal_summary(terminalreporter):
    if _ran_total:
        counts = ", ".join(f"{name}: {_ran_total[name]}" for name in ("numpy",) + COMPILED_BACKENDS)
        where = "simulator" if SIMULATED_CUDA else "GPU"
        terminalreporter.write_line(f"kernel tests that ran per backend: {counts} (cuda on the {where})")
