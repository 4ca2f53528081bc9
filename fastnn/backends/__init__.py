"""The backend registry: which kernel table the layers call.

    K = backends.get()          # the active table (chosen by FASTNN_BACKEND, read once)
    backends.use("cython")      # switch in code
    backends.available()        # {name: None if it loads, else the reason it does not}

A backend that was asked for and cannot load raises BackendUnavailableError with the
command that fixes it; there is no silent fallback.
"""
import importlib

from .. import config
from ..errors import BackendUnavailableError
from . import contract

_loaded = {}
_active = None


def load(name: str):
    """The kernel table of backend ``name``, imported on first use and checked against the contract."""
    config.check_backend_name(name)
    if name not in _loaded:
        module = importlib.import_module(f"{__name__}.{name}")
        missing = contract.missing(module)
        if missing:
            raise BackendUnavailableError(
                f"backend {name!r} does not export the contract kernels {', '.join(missing)}: "
                f"fastnn/backends/{name}/ is incomplete")
        _loaded[name] = module
    return _loaded[name]


def use(name: str):
    """Make ``name`` the active backend and return its kernel table."""
    global _active
    _active = load(name)
    from .. import threads
    threads.apply()  # BLAS's threads depend on the backend (see fastnn/threads.py)
    return _active


def get():
    """The active kernel table; the first call loads the one FASTNN_BACKEND names."""
    return _active if _active is not None else use(config.backend_name())


def active_name() -> str:
    return get().NAME


def available() -> dict:
    """{backend name: None if it loads here, else the reason it does not}."""
    reasons = {}
    for name in config.BACKENDS:
        try:
            load(name)
            reasons[name] = None
        except BackendUnavailableError as e:
            reasons[name] = str(e)
        except ImportError as e:  # a backend that is not written yet, or a broken install
            reasons[name] = f"cannot import fastnn.backends.{name}: {e}"
    return reasons
