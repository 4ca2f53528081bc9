"""Facts about the machine a benchmark ran on, kept with every result so two results can be
compared honestly: the same images/s mean different things on 2 cores of an AVX-512 server
and on 8 cores of a laptop, or when OpenBLAS was told (OPENBLAS_CORETYPE) to run older kernels.

``machine_facts()`` is what `fastnn bench` prints and writes into its JSON, and what the
pytest-benchmark suite adds to its saved machine_info. The BLAS rows come from threadpoolctl,
which only sees libraries already loaded: SciPy's BLAS (the one the compiled backends call)
is imported first, so it is there next to NumPy's. This module reports the OpenBLAS variables;
it never acts on them (fastnn's own settings are read in config.py).
"""
import os
import platform
import sys
from importlib import metadata

OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # set by hand on some machines
VERSIONS_OF = ("fastnn", "numpy", "scipy", "numba", "threadpoolctl", "torch")


def cpu_model(cpuinfo="/proc/cpuinfo") -> str:
    """The CPU's marketing name ("AMD EPYC 7R13 Processor"), else what platform knows."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine() or "unknown"


def physical_cores(cpuinfo="/proc/cpuinfo") -> int | None:
    """Distinct (socket, core) pairs in /proc/cpuinfo: cores without their SMT siblings; None if unknown."""
    cores, socket = set(), None
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    socket = value.strip()
                elif key == "core id":
                    cores.add((socket, value.strip()))
    except OSError:
        return None
    return len(cores) or None


def versions() -> dict:
    """{package: version or None}, read from the installed metadata (nothing is imported: torch
    takes seconds to import, and a benchmark parent should not load what it does not measure)."""
    found = {}
    for name in VERSIONS_OF:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    from . import __version__
    found["fastnn"] = __version__  # the source tree that runs, even when the installed metadata is older
    return found


def blas_libraries() -> list:
    """The BLAS and OpenMP libraries loaded in this process, as threadpoolctl sees them: which
    library, its version, the kernels it runs ("architecture": SkylakeX, Haswell, ...) and its threads."""
    import scipy.linalg  # noqa: F401  loads SciPy's BLAS, the one the compiled backends call
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads")
    return [{key: pool.get(key) for key in keep} | {"file": os.path.basename(pool.get("filepath", ""))}
            for pool in threadpool_info()]


def machine_facts(threads: int | None = None) -> dict:
    """Everything a benchmark result depends on besides fastnn's code: CPU, cores, BLAS, versions.
    ``threads`` is the thread count the measurement uses (cores used)."""
    from . import config

    return {
        "cpu": cpu_model(), "machine": platform.machine(), "system": platform.platform(),
        "threads": threads, "logical_cores": os.cpu_count(), "physical_cores": physical_cores(),
        "usable_cores": config.usable_cpus(),
        "blas": blas_libraries(),
        "openblas_env": {name: os.environ.get(name) for name in OPENBLAS_VARIABLES},
        "python": platform.python_version(), "python_executable": sys.executable, "versions": versions()}


def describe(facts: dict) -> list:
    """Three or four lines for a terminal: the CPU and cores, the BLAS kernels, the versions."""
    cores = (f"{facts['logical_cores']} logical / {facts['physical_cores'] or '?'} physical cores, "
             f"{facts['usable_cores']} usable")
    lines = [f"machine: {facts['cpu']} ({facts['machine']}), {cores}"
             + (f"; {facts['threads']} threads used" if facts.get("threads") else "")]
    blas = [f"{b['internal_api']} {b['version']} {b['architecture'] or ''} kernels ({b['file'] or b['prefix']})"
            .replace("  ", " ") for b in facts["blas"] if b["user_api"] == "blas"]
    lines.append("BLAS: " + ("; ".join(blas) or "none loaded"))
    env = facts["openblas_env"]
    lines.append("OpenBLAS environment: " + ", ".join(f"{k}={v}" if v is not None else f"{k} unset"
                                                       for k, v in env.items()))
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v is not None)
                 + f", Python {facts['python']}")
    return lines
