"""The serial build of fastnn_ext: compiled without OpenMP, it must compile and pass the cython
kernel tests. setup.py falls back to it wherever the compiler has no OpenMP (Apple's clang, say),
so nobody would notice it broken on a machine that has OpenMP, like this one and CI's.

.ci/run builds it into a directory of its own, beside the installed OpenMP build:

    FASTNN_OPENMP=0 python setup.py build_ext --build-lib DIR --build-temp DIR/tmp

and names DIR in FASTNN_SERIAL_EXT. The test below then runs the cython kernel tests in a
subprocess whose fastnn_ext modules are imported from DIR (and checked to be serial ones). Without
FASTNN_SERIAL_EXT it is skipped, saying how to build one, except under CI, where that fails: CI
must run it (and .ci/run checks in its report that it did).
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..conftest import IN_CI, load_or_skip
from .test_cython_ext import EXTENSION_MODULES

ROOT = Path(__file__).resolve().parents[2]
BUILD = "FASTNN_OPENMP=0 python setup.py build_ext --build-lib DIR --build-temp DIR/tmp"

# the cython kernel tests: every test of these files whose id names cython (the backend's
# parametrisations, and the cython-only files whole), except the two that hide the extension
KERNEL_TESTS = ["tests/backends/test_cython_ext.py", "tests/backends/test_cython_nonfinite.py",
                "tests/backends/test_agreement.py", "tests/backends/test_fused.py",
                "tests/backends/test_nonfinite.py", "tests/backends/test_winograd.py",
                "tests/backends/test_augment.py",
                "-k", "cython and not missing_extension", "-p", "no:randomly", "-p", "no:cacheprovider",
                "-q"]

# run in the subprocess: fastnn_ext's modules from the serial build directory (argv[1]), never
# from the installed build; each must say it was compiled without OpenMP; then pytest
RUNNER = textwrap.dedent("""
    import importlib, importlib.machinery, os, sys
    serial, modules = os.path.join(sys.argv[1], "fastnn_ext"), sys.argv[2].split(",")

    class SerialBuild:
        def find_spec(self, name, path=None, target=None):
            if name == "fastnn_ext":  # the package from the source tree, its modules from the build
                spec = importlib.machinery.PathFinder.find_spec(name, [os.getcwd()])
                spec.submodule_search_locations = [serial]
                return spec

    sys.meta_path.insert(0, SerialBuild())
    for name in modules:
        module = importlib.import_module("fastnn_ext." + name)
        assert module.__file__.startswith(serial), module.__file__
        assert module.OPENMP is False, f"{module.__file__} was compiled with OpenMP"
    print(f"serial build: {len(modules)} modules without OpenMP, from {serial}", flush=True)
    import pytest
    sys.exit(pytest.main(sys.argv[3:]))
""")


@pytest.fixture
def serial_dir():
    value = os.environ.get("FASTNN_SERIAL_EXT", "").strip()
    reason = (f"no serial build of fastnn_ext to test: build one with `{BUILD}` and set "
              f"FASTNN_SERIAL_EXT=DIR (.ci/run does)")
    if value and not (Path(value) / "fastnn_ext").is_dir():
        reason = f"FASTNN_SERIAL_EXT={value} holds no fastnn_ext/: build it there with `{BUILD}`"
    elif value:
        return Path(value).resolve()
    if IN_CI:
        pytest.fail(f"CI must test the serial build: {reason}")
    pytest.skip(reason)


def test_serial_build_passes_the_kernel_tests(serial_dir):
    result = subprocess.run([sys.executable, "-c", RUNNER, str(serial_dir), ",".join(EXTENSION_MODULES),
                             *KERNEL_TESTS], cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert f"serial build: {len(EXTENSION_MODULES)} modules without OpenMP" in output, output[-3000:]
    passed = [line for line in output.splitlines() if " passed" in line and " in " in line]
    assert passed and int(passed[-1].split(" passed")[0].split()[-1]) >= 200, output[-3000:]


def test_installed_build_has_openmp():
    """Under CI (a compiler with OpenMP) the installed extension is the OpenMP build: setup.py falls
    back to the serial one without failing, so a broken OpenMP build would otherwise go unseen."""
    if not IN_CI:
        pytest.skip("only enforced under CI=true")
    assert load_or_skip("cython").OPENMP, "fastnn_ext was built without OpenMP: see pip's warnings"
