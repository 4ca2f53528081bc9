"""The only place fastnn reads environment variables.

FASTNN_BACKEND       numpy | numba | cython | cuda   (default: default_backend())
FASTNN_DATA          a directory that holds the MNIST IDX files
FASTNN_NUM_THREADS   threads for Numba, OpenMP and BLAS together (default: usable_cpus())
FASTNN_CONV_ALGO     auto | im2col | direct | winograd | winograd4: force one convolution algorithm
FASTNN_FUSION        1 | 0: run Conv2D/Dense -> ReLU (-> MaxPool2D) chains as fused kernels (default 1)
FASTNN_TUNE          1 | 0: time the convolution algorithms per shape on this machine, or use the
                     built-in table (default 0; fastnn/backends/tuning.py, config.tune)
XDG_CACHE_HOME       the user cache directory root (downloads and the tuning cache go to <it>/fastnn)
OPENBLAS_CORETYPE, NUMBA_CPU_NAME, NUMBA_CPU_FEATURES   read only: they change the machine code
                     that runs, so the tuning cache is keyed by them (code_path_environment())
OPENBLAS_THREAD_TIMEOUT  set (if unset) by quiet_idle_blas_threads, for the compiled backends
FASTNN_MPI_TIMEOUT   seconds a distributed run's ranks wait for each other at a step (default 600)
PMI_RANK, OMPI_COMM_WORLD_RANK, PMIX_RANK   the rank an MPI launcher gave this process (read only)
FASTNN_TEST_KILL     tests only: step:N | write:N | stop:N, optionally @RANK; see test_kill_point()
"""
import functools
import math
import os
from pathlib import Path

from .errors import ConfigError

BACKENDS = ("numpy", "numba", "cython", "cuda")
DEFAULT_BACKEND, FALLBACK_BACKEND = "cython", "numba"
DEFAULT_RULE = f"{DEFAULT_BACKEND} where fastnn_ext is built with OpenMP, else {FALLBACK_BACKEND}"


def check_backend_name(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return name


@functools.lru_cache(maxsize=None)
def default_backend() -> str:
    """The backend used when FASTNN_BACKEND names none: cython where its compiled extension is
    built with OpenMP, else numba.

    cython is the faster of the two compiled CPU backends on every named model, and it needs no
    JIT compile: a fresh install's first training step comes about a second after launch, where
    numba's first run compiles for 16-93 s before it (cached on disk after that). A serial build
    of fastnn_ext (a compiler without OpenMP) runs on one thread, so numba's threads win there."""
    quiet_idle_blas_threads()  # fastnn_ext loads SciPy's BLAS: first make its idle threads sleep
    try:
        from fastnn_ext import _conv
    except ImportError:  # not built (no C compiler at install): numba, which needs none
        return FALLBACK_BACKEND
    return DEFAULT_BACKEND if _conv.OPENMP else FALLBACK_BACKEND


def backend_name() -> str:
    """The backend named by FASTNN_BACKEND, else default_backend()."""
    name = os.environ.get("FASTNN_BACKEND", "").strip().lower() or default_backend()
    try:
        return check_backend_name(name)
    except ConfigError as e:
        raise ConfigError(f"FASTNN_BACKEND: {e}") from None


CONV_ALGORITHMS = ("auto", "im2col", "direct", "winograd", "winograd4")


def conv_algorithm() -> str:
    """The convolution algorithm FASTNN_CONV_ALGO forces, else "auto" (each backend's
    ``conv2d_algorithm`` chooses per layer shape). Read on every call, so tests can switch it."""
    name = os.environ.get("FASTNN_CONV_ALGO", "").strip().lower() or "auto"
    if name not in CONV_ALGORITHMS:
        raise ConfigError(f"FASTNN_CONV_ALGO={name!r}: choose one of {', '.join(CONV_ALGORITHMS)}")
    return name


def fusion() -> bool:
    """Whether new models fuse their layer chains (FASTNN_FUSION, default on; fastnn/fusion.py)."""
    value = os.environ.get("FASTNN_FUSION", "").strip().lower()
    if value in ("", "1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ConfigError(f"FASTNN_FUSION={value!r}: give 1 (fuse layer chains, the default) or 0 (every layer alone)")


def tune() -> bool:
    """Whether the compiled backends time their convolution algorithms per shape on this machine
    and keep the fastest in the tuning cache (FASTNN_TUNE=1), or use the built-in table (the
    default, FASTNN_TUNE=0). Read on every call, so tests can switch it.

    Off by default until the tuner times the kernels the models run: it times the plain
    convolution, while the nets run fused conv + ReLU (+ max-pool) kernels whose epilogues change
    the ranking. On an AVX-512 host, numba's deep-cnn trained at 1,580 images/s on its tuned
    choices (winograd4 on three layers) against 2,305 on the table (2 threads, batch 100)."""
    value = os.environ.get("FASTNN_TUNE", "").strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("", "0", "off", "false", "no"):
        return False
    raise ConfigError(f"FASTNN_TUNE={value!r}: give 1 (time the convolution algorithms on this machine) or 0 "
                      f"(the built-in table, the default)")


# set by hand on some machines; each changes which machine code runs (OpenBLAS's kernels,
# the CPU Numba compiles for), so a timing taken under one value says nothing about another
CODE_PATH_VARIABLES = ("OPENBLAS_CORETYPE", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")


def code_path_environment() -> dict:
    """{name: value or None} of CODE_PATH_VARIABLES, as this process sees them."""
    return {name: os.environ.get(name) for name in CODE_PATH_VARIABLES}


def data_dir() -> Path | None:
    value = os.environ.get("FASTNN_DATA", "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(root) if root else Path.home() / ".cache") / "fastnn"


def usable_cpus(cgroup_root="/sys/fs/cgroup") -> int:
    """The CPUs this process may really use: the cores in its affinity mask (``taskset``,
    ``docker --cpuset-cpus``), capped by a cgroup CPU quota (``docker --cpus=2``, Kubernetes
    limits), rounded up. os.cpu_count() counts every core of the machine and would start more
    threads than the process gets, which then wait for each other at every parallel loop."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows: no affinity mask to read
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(Path(cgroup_root), Path("/proc/self/cgroup"))
    return max(1, min(cpus, math.ceil(quota)) if quota else cpus)


def cgroup_cpu_quota(root: Path, proc_cgroup: Path) -> float | None:
    """CPUs' worth of time this process's cgroup (or an ancestor) may use; None if unlimited.
    cgroup v2: ``<root>/<own group>/cpu.max`` ("200000 100000" is 2 CPUs, "max 100000" none);
    cgroup v1: ``<root>/cpu/cpu.cfs_quota_us`` over ``cpu.cfs_period_us`` (-1: none)."""
    try:
        own = next((line.split(":", 2)[2].strip() for line in proc_cgroup.read_text().splitlines()
                    if line.startswith("0::")), "/")
    except (OSError, IndexError):
        own = "/"
    group = root / own.lstrip("/")
    candidates = [(d / "cpu.max", None) for d in (group, *group.parents) if d == root or root in d.parents]
    candidates.append((root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"))
    quotas = []
    for first, second in candidates:
        try:
            words = first.read_text().split() + (second.read_text().split() if second else [])
            limit, period = float(words[0]), float(words[1])
        except (OSError, ValueError, IndexError):  # absent, or "max": no limit here
            continue
        if limit > 0 and period > 0:
            quotas.append(limit / period)
    return min(quotas) if quotas else None


def num_threads() -> int:
    value = os.environ.get("FASTNN_NUM_THREADS", "").strip()
    if not value:
        return usable_cpus()
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"FASTNN_NUM_THREADS={value!r}: give a whole number of threads, 1 or more")
    return int(value)


def quiet_idle_blas_threads():
    """Make OpenBLAS's idle threads sleep at once instead of spinning; call before SciPy's BLAS loads.

    After every call OpenBLAS's threads spin for 2**28 cycles (~0.1 s) before they sleep, so
    right after a GEMM they fight Numba's or OpenMP's threads (the next parallel loop) for the
    cores: on 2 cores that made a simple-cnn training step ~3x slower. OpenBLAS reads
    OPENBLAS_THREAD_TIMEOUT once, when the library loads; a value the user has set wins.
    NumPy's own BLAS, loaded before fastnn, is not affected; the compiled backends use SciPy's.
    """
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def test_kill_point() -> tuple[str, int] | None:
    """FASTNN_TEST_KILL=step:N or write:N, for the crash tests only: the process kills itself
    (SIGKILL, no clean-up) right after training step N, or halfway through its Nth atomic
    file write, so tests can prove that checkpoints survive a crash at a known point. stop:N
    stops the process instead (SIGSTOP: alive, but hung) after step N. A suffix @R (step:N@1)
    limits it to the process that an MPI launcher started as rank R."""
    value = os.environ.get("FASTNN_TEST_KILL", "").strip()
    if not value:
        return None
    point, _, rank = value.partition("@")
    kind, _, n = point.partition(":")
    if kind not in ("step", "write", "stop") or not n.isdigit() or int(n) < 1 or (rank and not rank.isdigit()):
        raise ConfigError(f"FASTNN_TEST_KILL={value!r}: expected step:N, write:N or stop:N with N >= 1, "
                          f"optionally @RANK")
    if rank and int(rank) != launcher_rank():
        return None
    return kind, int(n)


# the variables MPI launchers set for the processes they start: MPICH's and Intel MPI's hydra,
# Open MPI's mpirun, and PMIx launchers (Slurm's srun among them)
LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def launcher_rank() -> int | None:
    """This process's rank as an MPI launcher set it (None: not started by one); read without MPI."""
    for name in LAUNCHER_RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def mpi_timeout() -> float:
    """FASTNN_MPI_TIMEOUT: the seconds a rank waits for the others at a step's Allreduce (default 600)."""
    value = os.environ.get("FASTNN_MPI_TIMEOUT", "").strip()
    if not value:
        return 600.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise ConfigError(f"FASTNN_MPI_TIMEOUT={value!r}: give a number of seconds greater than 0")
    return seconds
