"""Numba's on-disk cache, invalidated whenever any source file of this backend changes.

The defect this fixes: Numba stamps each cached kernel with a hash of the kernel's own file
only. A kernel whose callee lives in another module (``activation._relu`` calls
``_common.relu``) kept its old machine code when only the callee's file changed, so an edit or
a ``git pull`` into an editable install silently gave the old results.

``install()`` puts a cache locator in front of Numba's own for the functions defined in this
package (fastnn/backends/numba/, conv/ included). It finds the cache directory exactly as
Numba would (``NUMBA_CACHE_DIR`` if set, else ``__pycache__`` beside the file, else the user-wide
cache) and only replaces the source stamp with one hash of every ``.py`` file here plus
fastnn's version. A changed stamp makes Numba treat a kernel's index as empty and recompile;
the new index and data files overwrite the stale ones under the same names, so nothing
accumulates. The cost: editing any file here recompiles every kernel of the backend once.
(``NUMBA_CACHE_LOCATOR_CLASSES``, if a user sets it, replaces Numba's list and this locator.)
"""
import hashlib
import os
from pathlib import Path

from numba.core.caching import CacheImpl, _CacheLocator

from ... import __version__

PACKAGE = Path(__file__).resolve().parent


def sources_hash(root=PACKAGE, version=__version__):
    """One hash of every .py file under root (names and contents) and fastnn's version."""
    digest = hashlib.sha256(version.encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class BackendSourcesLocator(_CacheLocator):
    """Numba's own locator for a function of this package, stamped with sources_hash()."""

    _stamp = None  # computed on the first function of this package, once per process

    def __init__(self, numba_locator):
        self._numba_locator = numba_locator

    def __getattr__(self, name):  # _py_file, _lineno, ...: Numba reads them for its warnings
        return getattr(self._numba_locator, name)

    def ensure_cache_path(self):
        self._numba_locator.ensure_cache_path()

    def get_cache_path(self):
        return self._numba_locator.get_cache_path()

    def get_disambiguator(self):
        return self._numba_locator.get_disambiguator()

    def get_source_stamp(self):
        return BackendSourcesLocator._stamp

    @classmethod
    def from_function(cls, py_func, py_file):
        if not Path(os.path.realpath(py_file)).is_relative_to(PACKAGE):
            return None  # not ours: Numba's own locators take it as before
        for numba_class in CacheImpl._locator_classes:
            if numba_class is not cls:
                numba_locator = numba_class.from_function(py_func, py_file)
                if numba_locator is not None:
                    if cls._stamp is None:
                        cls._stamp = sources_hash()
                    return cls(numba_locator)
        return None


def install():
    """Put BackendSourcesLocator first; must run before any ``@njit(cache=True)`` here, since
    the decorator picks its locator when it runs."""
    if BackendSourcesLocator not in CacheImpl._locator_classes:
        CacheImpl._locator_classes.insert(0, BackendSourcesLocator)
