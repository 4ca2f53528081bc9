"""Builds fastnn's Cython extension, fastnn_ext (the ``cython`` backend). Nothing else:
the package metadata lives in pyproject.toml.

    pip install -e ".[dev]"             # or: python setup.py build_ext --inplace

Compiler options are set here, once: the Cython directives below, -O3 and OpenMP, plus
-fno-math-errno and -fno-trapping-math (the kernels never read errno or FP exception
flags; without them GCC keeps branches such as ``dy * (y > 0)`` and will not vectorise
sqrt).

Vector width. By default there is no -march flag, so a wheel runs on any x86-64: the compiled
loops use baseline SSE2 (4 floats at a time, no fused multiply-add), while the heavy products
go to BLAS, which picks AVX2 / AVX-512 kernels for the CPU at run time. A build for this
machine only adds -march=native (AVX2 / AVX-512 and FMA in fastnn's own loops too):

    FASTNN_NATIVE=1 pip install -e .    # or: FASTNN_NATIVE=1 python setup.py build_ext --inplace

setuptools rebuilds only modules whose sources changed, so after switching build with
``FASTNN_NATIVE=1 python setup.py build_ext --inplace --force`` (FASTNN_OPENMP below too).
Measured on the project's machine (AVX-512, 2 threads): no convolution got faster. im2col's time
is BLAS (already AVX-512) and memcpy (glibc picks its vectors at run time), and was the same
within noise; the direct convolution's loops (since deleted), whose rows are only 8-28 floats
long, ran 20-60% slower (still 20-40% slower with -mprefer-vector-width=256). So the portable
build is the default and loses nothing here.

The serial build. Where the compiler has no OpenMP (Apple's clang, say), each module is compiled
without it, with a warning: the kernels then run their parallel loops on one thread, with the same
results (prange without OpenMP is a plain loop; fastnn_ext/_omp_shim.h stands in for omp.h), and
every module's ``OPENMP`` (``fastnn.backends.cython.OPENMP``) is False. FASTNN_OPENMP=0 makes
that build even where OpenMP is there, e.g. to test it (CI does, in .ci/run), here into a
directory of its own that leaves the installed extension alone:

    FASTNN_OPENMP=0 python setup.py build_ext --build-lib DIR --build-temp DIR/tmp

If the extension cannot be compiled at all (no C compiler), the install still succeeds without
it and warns; asking for the cython backend then raises BackendUnavailableError with the
command that builds it.
"""
import os
import sys
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULES = ("_arrays", "_dense", "_conv", "_pool", "_activation", "_loss", "_optim", "_winograd",
           "_augment")

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,      # indices are computed from checked shapes
    "wraparound": False,       # no negative indexing in the kernels
    "cdivision": True,         # C integer division: no zero checks in the index maths
    "initializedcheck": False,
    "embedsignature": True,
}

# (compile, link) flags per compiler family
OPENMP_FLAGS = {
    "msvc": (["/O2", "/openmp"], []),
    "unix": (["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"], ["-fopenmp"]),
}
SERIAL_FLAGS = {"msvc": (["/O2"], []), "unix": (["-O3", "-fno-math-errno", "-fno-trapping-math"], [])}
# FASTNN_OPENMP=0: the serial build, without OpenMP even where the compiler has it (see the docstring)
OPENMP = os.environ.get("FASTNN_OPENMP", "").strip().lower() not in ("0", "false", "no", "off")
# FASTNN_NATIVE=1: compile for this CPU's full vector width (see the docstring)
NATIVE = os.environ.get("FASTNN_NATIVE", "").strip().lower() not in ("", "0", "false", "no")
NATIVE_FLAGS = {"msvc": [], "unix": ["-march=native"]}  # MSVC has no "native"; /arch:AVX2 is a choice


def _warn(message):
    warnings.warn(message)
    print(f"WARNING: {message}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: OpenMP if it can, serial if it must,
    else no extension at all (the cython backend then says how to build it)."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # no compiler at all: distutils raises before compiling
            if self.gave_up:  # already explained; this is the editable install's copy step
                return
            _warn(f"fastnn_ext was not built ({type(e).__name__}: {e}); the cython backend "
                  "is unavailable. Install a C compiler, then `pip install -e .`")

    def build_extension(self, ext):
        if self.gave_up:  # one module failed outright: the rest would too, and say it again
            return
        family = "msvc" if self.compiler.compiler_type == "msvc" else "unix"
        native = NATIVE_FLAGS[family] if NATIVE else []
        for flags in ([OPENMP_FLAGS[family]] if OPENMP else []) + [SERIAL_FLAGS[family]]:
            ext.extra_compile_args, ext.extra_link_args = list(flags[0]) + native, list(flags[1])
            try:
                super().build_extension(ext)
                return
            except Exception as e:
                error = e
                if flags is OPENMP_FLAGS[family]:
                    _warn(f"building {ext.name} with OpenMP failed ({error}); trying without")
        self.gave_up = True
        _warn(f"fastnn_ext was not built: compiling {ext.name} failed ({error}); the cython "
              "backend is unavailable. Install a C compiler, then `pip install -e .`")

    gave_up = False


def extensions():
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as e:
        _warn(f"fastnn_ext is not built: {e.name} is missing (pip install cython numpy scipy)")
        return []
    modules = [Extension(f"fastnn_ext.{name}", [f"fastnn_ext/{name}.pyx"],
                         include_dirs=[numpy.get_include(), "fastnn_ext"],  # _omp_shim.h
                         depends=["fastnn_ext/_omp_shim.h"]) for name in MODULES]
    return cythonize(modules, compiler_directives=CYTHON_DIRECTIVES, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt},
      exclude_package_data={"fastnn_ext": ["*.c"]})  # generated C: not shipped in wheels
