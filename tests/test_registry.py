"""The backend registry: choosing, switching, and explaining what cannot load."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastnn import backends, config
from fastnn.backends import contract
from fastnn.errors import ConfigError


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown backend 'tpu': choose one of numpy, numba, cython, cuda"):
        backends.use("tpu")


def test_use_switches_the_active_table():
    table = backends.use("numpy")
    assert backends.get() is table and backends.active_name() == "numpy"


def test_available_gives_a_reason_or_none():
    reasons = backends.available()
    assert list(reasons) == list(config.BACKENDS)
    assert reasons["numpy"] is None
    for name, reason in reasons.items():
        assert reason is None or (isinstance(reason, str) and reason)


def test_every_loadable_backend_exports_the_whole_contract():
    for name, reason in backends.available().items():
        if reason is None:
            assert contract.missing(backends.load(name)) == [], name


def test_incomplete_backend_is_refused(monkeypatch):
    import types
    fake = types.SimpleNamespace(NAME="numpy", dense_forward=lambda *a: None)
    monkeypatch.delitem(backends._loaded, "numpy", raising=False)
    monkeypatch.setattr(backends.importlib, "import_module", lambda name: fake)
    with pytest.raises(backends.BackendUnavailableError, match="does not export the contract kernels") as info:
        backends.load("numpy")
    assert "dense_backward" in str(info.value) and "dense_forward" not in str(info.value)


@pytest.mark.parametrize("value,expected", [("numpy", "numpy"), ("", config.default_backend()),
                                            (" NumPy ", "numpy")])
def test_fastnn_backend_environment_variable(value, expected):
    code = "import fastnn.backends as b; print(b.active_name())"
    env = dict(os.environ, FASTNN_BACKEND=value)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == expected


def test_importing_fastnn_loads_no_backend():
    code = ("import sys, fastnn, fastnn.config as c; "
            "print(any(m.startswith(f'fastnn.backends.{name}') for m in sys.modules for name in c.BACKENDS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_conv_algorithm_setting(monkeypatch):
    monkeypatch.delenv("FASTNN_CONV_ALGO", raising=False)
    assert config.conv_algorithm() == "auto"
    monkeypatch.setenv("FASTNN_CONV_ALGO", " Winograd4 ")
    assert config.conv_algorithm() == "winograd4"
    monkeypatch.setenv("FASTNN_CONV_ALGO", "fft")
    with pytest.raises(ConfigError, match="FASTNN_CONV_ALGO='fft': choose one of auto, im2col"):
        config.conv_algorithm()


def test_backend_packages_take_their_kernel_names_from_the_contract():
    """No backend's __init__ lists the contract's kernels again: contract.kernels_of gathers them."""
    import ast
    for name in config.BACKENDS:
        source = (Path(backends.__file__).parent / name / "__init__.py").read_text()
        named = {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
        named |= {alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
                  for alias in node.names}
        assert not named & set(contract.NAMES), f"{name}/__init__.py names {sorted(named & set(contract.NAMES))}"
        assert "kernels_of(__name__)" in source


def test_a_kernel_defined_twice_is_refused(tmp_path, monkeypatch):
    package = tmp_path / "twice"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "dense.py").write_text("def dense_forward(x, W, b): return 1\n")
    (package / "conv.py").write_text("def dense_forward(x, W, b): return 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="dense_forward is defined both in dense and in conv"):
        contract.kernels_of("twice")
