"""The first step in seconds: the default backend needs no JIT compile where fastnn_ext is built,
numba's compiling shows as a progress bar, and `fastnn warmup` fills the on-disk cache so that a
later process compiles nothing."""
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastnn import config
from fastnn.warmup import compile_progress

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_backend_is_cython_where_fastnn_ext_is_built_with_openmp_else_numba(monkeypatch):
    config.default_backend.cache_clear()
    try:
        from fastnn_ext import _conv
    except ImportError:
        assert config.default_backend() == "numba"
    else:
        assert config.default_backend() == ("cython" if _conv.OPENMP else "numba")
        config.default_backend.cache_clear()
        monkeypatch.setattr(_conv, "OPENMP", False)  # the serial build: one thread, numba's threads win
        assert config.default_backend() == "numba"
        config.default_backend.cache_clear()
        monkeypatch.setitem(sys.modules, "fastnn_ext._conv", None)  # not built: import fails
        assert config.default_backend() == "numba"
    config.default_backend.cache_clear()


def test_compile_progress_counts_compiles_and_shows_nothing_when_none_happen():
    from numba import njit

    @njit  # not cached: compiles on its first call in this process
    def twice(v):
        return 2 * v

    shown = io.StringIO()
    with compile_progress(file=shown) as counter:
        assert twice(21) == 42
    assert counter.count == 1 and "compiling numba kernels" in shown.getvalue() and "test_warmup.twice" in \
        shown.getvalue()
    again = io.StringIO()
    with compile_progress(file=again) as counter:
        assert twice(1) == 2  # compiled already: no bar
    assert counter.count == 0 and again.getvalue() == ""


def run_warmup(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT), FASTNN_TUNE="0")
    done = subprocess.run([sys.executable, "-m", "fastnn", "warmup", "--model", "mlp", "--backend", "numba",
                           "--threads", "1", "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_warmup_fills_a_fresh_cache_and_a_second_process_compiles_nothing(tmp_path):
    first = run_warmup(tmp_path)
    compiled = int(first.split("mlp")[-1].split("s:")[1].split("kernel")[0])
    assert compiled >= 5, first  # dense, fused dense+ReLU, loss, optimizer, ... each compiled once
    assert any(tmp_path.rglob("*.nbi")), "nothing was written to the cache directory"
    assert ": 0 kernel(s) compiled" in run_warmup(tmp_path)
