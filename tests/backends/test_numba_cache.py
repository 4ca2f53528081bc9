"""Numba's on-disk cache must not serve machine code compiled from older sources.

Numba stamps a cached kernel with its own file only, so a kernel whose callee lives in another
module kept its old code when only the callee's file changed (fastnn/backends/numba/_cache.py).
Each case runs in a copy of the package, in fresh interpreters, with its own cache.
"""
import ast
import os
import shutil
import subprocess
import sys

import pytest

import fastnn

# relu_forward's kernel (activation._relu) calls _common.relu, which lives in another file
PROBE = """
import numpy as np
from fastnn.backends import numba as K
from fastnn.backends.numba import activation
print(K.__file__)
print(K.relu_forward(np.array([-1.0, 2.0, 3.0], np.float32)).tolist())
print(sum(activation._relu.stats.cache_hits.values()))
"""
OLD_RELU = "return v if not v <= ZERO else ZERO"
NEW_RELU = "return 10 * v if not v <= ZERO else ZERO"


@pytest.mark.parametrize("where", ["__pycache__", "NUMBA_CACHE_DIR"])
def test_a_callee_edited_in_another_file_is_recompiled(tmp_path, where):
    package = tmp_path / "src" / "fastnn"
    shutil.copytree(os.path.dirname(fastnn.__file__), package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "FASTNN_"))}
    env.update(PYTHONPATH=str(package.parent), FASTNN_NUM_THREADS="1")
    if where == "NUMBA_CACHE_DIR":
        env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba-cache")

    def probe():
        run = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        path, values, hits = run.stdout.splitlines()[-3:]
        assert path.startswith(str(package)), "the probe imported the real package, not the copy"
        return ast.literal_eval(values), int(hits)

    assert probe() == ([0.0, 2.0, 3.0], 0)   # compiled and saved
    assert probe() == ([0.0, 2.0, 3.0], 1)   # loaded from the cache: the cache is in use
    common = package / "backends" / "numba" / "_common.py"
    source = common.read_text()
    assert source.count(OLD_RELU) == 1
    common.write_text(source.replace(OLD_RELU, NEW_RELU))
    assert probe() == ([0.0, 20.0, 30.0], 0)  # _relu recompiled against the new relu
    assert probe() == ([0.0, 20.0, 30.0], 1)  # and cached again
