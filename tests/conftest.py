"""Test set-up shared by every test.

* Numba's CUDA simulator is switched on before anything imports numba, unless the
  machine has an NVIDIA GPU: then the same CUDA tests run on the device.
* ``candidate`` runs a test once per compiled backend (numba, cython, cuda). A backend that
  cannot load here is skipped with its reason; under CI (CI=true) that is a failure instead,
  so a green CI run means every backend really ran.
* The terminal summary counts the tests that ran per backend.
"""
import collections
import os
from pathlib import Path

if not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np
import pytest

from fastnn import backends

COMPILED_BACKENDS = ("numba", "cython", "cuda")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SIMULATED_CUDA = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"

_ran = collections.Counter()


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


def pytest_terminal_summary(terminalreporter):
    if _ran:
        counts = ", ".join(f"{name}: {_ran[name]}" for name in ("numpy",) + COMPILED_BACKENDS)
        where = "simulator" if SIMULATED_CUDA else "GPU"
        terminalreporter.write_line(f"kernel tests that ran per backend: {counts} (cuda on the {where})")
