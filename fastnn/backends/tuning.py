"""Convolution algorithms chosen by timing them on the machine that runs them, like cuDNN's
benchmark mode and FFTW's wisdom.

A table measured on one machine was wrong on another (numba's winograd4 for deep-cnn's 16->16
layer: the fastest block on an AVX-512 host, the slowest on an AVX2 one). So with FASTNN_TUNE=1
(config.tune says why it is off by default), the first time a convolution shape is used, the
backend's ``conv2d_algorithm`` asks its Tuner, which runs one
forward and one backward pass (dx and dW) of every algorithm that applies on random float32 data
of exactly that shape, keeps the fastest, and writes it to an on-disk cache:

    forced (FASTNN_CONV_ALGO) -> only one applies -> table (FASTNN_TUNE=0, the default) -> cached -> time now

The cache, ``config.cache_dir() / "conv-tuning.json"``, maps a key of everything that decides
the timing (backend, x and W shapes, stride, pad, threads, fastnn's version, and the machine: CPU
model, ISA flags, the environment values that change code paths, config.code_path_environment)
to the choice and the ms of every candidate. A file that is not JSON, another format or
version, or holds an entry that is not what this module writes, is ignored whole with a warning
(never trusted in part), and replaced on the next save. Writes are atomic (a temporary beside
it, then os.replace) and merge what other processes wrote since this one read the file.

The backends pass their own algorithms, ``applies``, table and timed step (one Tuner each, in
their conv module); everything else about tuning is here, once. ``spent()`` is the time this
process has spent tuning, for reporting apart from training; ``tune_model`` tunes every
convolution of a model (``fastnn tune``).
"""
import functools
import hashlib
import json
import os
import platform
import tempfile
import warnings
from pathlib import Path
from time import perf_counter
from typing import NamedTuple

import numpy as np

from .. import __version__, config

ALGORITHMS = tuple(name for name in config.CONV_ALGORITHMS if name != "auto")
SOURCES = ("forced", "only", "table", "tuned")
FILE_NAME = "conv-tuning.json"
FORMAT, FORMAT_VERSION = "fastnn-conv-tuning", 1
VERSION = __version__  # part of every key: another fastnn's kernels are other kernels
CPUINFO = "/proc/cpuinfo"

# timing: each candidate runs once untimed, then rounds of one timed run each, in turn (a burst
# of load elsewhere hits all of them alike), until REPEATS rounds or BUDGET_S seconds of them;
# from the third round on, a candidate slower than CUTOFF x the best sits the rest out
REPEATS, BUDGET_S, CUTOFF = 5, 0.5, 2.0


class Choice(NamedTuple):
    """The algorithm conv2d_forward runs for a shape, and why.

    source: "forced" (FASTNN_CONV_ALGO), "only" (the one algorithm that applies), "table"
    (FASTNN_TUNE=0, the default: the built-in table) or "tuned" (timed on this machine, now or before);
    ms: for "tuned", {algorithm: ms of one forward + backward pass (see measure)}, else None."""
    algorithm: str
    source: str
    ms: dict | None = None


class Spent(NamedTuple):
    """Time this process has spent tuning (reported apart from training, like compile time)."""
    seconds: float         # all of it: untimed first runs, timed runs, reading and writing the cache
    warmup_seconds: float  # of which the untimed first runs: mostly Numba's JIT compile or cache load
    shapes: int            # shapes timed


class TuningCacheWarning(UserWarning):
    """The tuning cache file could not be read or written; fastnn carries on without it."""


TUNERS = {}  # backend name -> its Tuner (registered when its conv module loads)
_files = {}  # cache file path -> {key: entry}, read once per process, then kept up to date
_chosen = {}  # (backend, x_shape, w_shape, stride, pad, threads) -> Choice: a layer's every call asks
_spent = {"seconds": 0.0, "warmup_seconds": 0.0, "shapes": 0}
_tuning = False  # a shape is being timed: a timed step must not ask the tuner again


def spent() -> Spent:
    return Spent(_spent["seconds"], _spent["warmup_seconds"], _spent["shapes"])


def cache_file() -> Path:
    """Where the choices are kept (XDG_CACHE_HOME/fastnn/conv-tuning.json, else ~/.cache/...)."""
    return config.cache_dir() / FILE_NAME


def describe_cache() -> str:
    """One line for ``fastnn info``: how many choices the cache file holds, and how many for this
    machine (its key's machine id); or that it is missing or unusable (and why)."""
    data, problem = _load(cache_file())
    if problem:
        return f"unusable ({problem}): ignored, and rewritten on the next tuning"
    if not data:
        return "none yet (shapes are timed on first use, or ahead of time by fastnn tune)"
    machine_id, _ = machine(tuple(config.code_path_environment().items()))
    mine = sum(key.endswith(f" machine={machine_id}") for key in data["entries"])
    return f"{len(data['entries'])} choice(s), {mine} of them for this machine and environment"


def forget():
    """Drop what this process read from cache files, and the machine fingerprint: the next
    choice reads them again, as a new process would (tests; ``fastnn tune`` after editing)."""
    _files.clear()
    _chosen.clear()
    machine.cache_clear()


# ------------------------------------------------------------------------- the key

@functools.lru_cache(maxsize=None)
def machine(env: tuple = ()) -> tuple:
    """(id, description) of this CPU under the code-path environment ``env`` (name, value pairs).
    The id (16 hex digits) goes into every key; the description is written beside the entries so
    that a reader of the file can tell the machines apart."""
    fields = {}
    try:
        with open(CPUINFO) as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():  # a blank line ends the first processor's block
                    break
                fields.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux: what platform knows
        pass
    # x86 names its ISA extensions "flags", ARM "Features"; ARM has no "model name" but a part number
    flags = sorted((fields.get("flags") or fields.get("Features") or "").split())
    description = {
        "cpu": fields.get("model name") or platform.processor() or "unknown",
        "arch": platform.machine(),
        "part": " ".join(fields[k] for k in ("CPU implementer", "CPU part") if k in fields) or None,
        "isa_sha256": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16],
        "isa_flags": len(flags),
        "env": dict(env),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16], description


def _dims(shape):
    return "x".join(str(int(d)) for d in shape)


# ------------------------------------------------------------------------- the cache file

def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _entry_problem(entry):
    """What is wrong with one entry (None: it is what _save writes)."""
    if not isinstance(entry, dict):
        return f"not an object but {type(entry).__name__}"
    algorithm, ms, seconds = entry.get("algorithm"), entry.get("ms"), entry.get("seconds")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        return f"unknown algorithm {algorithm!r}"
    if not isinstance(ms, dict) or algorithm not in ms:
        return f"no time for its algorithm {algorithm!r} in ms"
    for name, value in ms.items():
        if name not in ALGORITHMS:
            return f"unknown algorithm {name!r} in ms"
        if not _number(value) or value <= 0:
            return f"ms[{name!r}] is {value!r}, not a positive number"
    if ms[algorithm] > min(ms.values()):
        return f"{algorithm!r} is not the fastest of its ms"
    if not _number(seconds) or seconds < 0:
        return f"seconds is {seconds!r}, not a number >= 0"
    return None


def _problem(data):
    """What is wrong with a parsed cache file (None: nothing)."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if data.get("format") != FORMAT:
        return f"format {data.get('format')!r}, not {FORMAT!r}"
    if data.get("version") != FORMAT_VERSION:
        return f"format version {data.get('version')!r}, this fastnn reads version {FORMAT_VERSION}"
    if not isinstance(data.get("entries"), dict) or not isinstance(data.get("machines", {}), dict):
        return "'entries' or 'machines' is not an object"
    for key, entry in data["entries"].items():
        problem = _entry_problem(entry)
        if problem:
            return f"entry {key!r}: {problem}"
    return None


def _load(path) -> tuple:
    """(the parsed file at ``path``, or {} if there is none, or None if it is unusable; why not)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}, None
    except OSError as e:
        return None, f"cannot be read ({e})"
    except ValueError as e:  # not UTF-8, not JSON
        return None, f"not JSON ({e})"
    problem = _problem(data)
    return (data, None) if problem is None else (None, problem)


def _read(path, warn=True) -> dict | None:
    """The parsed file at ``path``; {} if there is none; None (with a warning) if it is unusable."""
    data, problem = _load(path)
    if problem and warn:
        warnings.warn(f"fastnn: ignoring the convolution tuning cache {path}: {problem}; "
                      f"its shapes are timed again and the file is rewritten", TuningCacheWarning, stacklevel=3)
    return data


def _entries(path) -> dict:
    """{key: entry} of the cache file at ``path``, read once per process."""
    path = str(path)
    if path not in _files:
        _files[path] = dict((_read(path) or {}).get("entries", {}))
    return _files[path]


def _save(path, machine_id, description):
    """Write this process's entries for ``path`` atomically, merged with what others wrote since."""
    path = Path(path)
    on_disk = _read(path, warn=False) or {}  # unusable: replaced by ours alone
    entries = {**on_disk.get("entries", {}), **_files[str(path)]}
    machines = {**on_disk.get("machines", {}), machine_id: description}
    text = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "machines": machines, "entries": entries},
                      indent=1, sort_keys=True)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except OSError as e:  # a read-only home: the choice still holds for this process
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        warnings.warn(f"fastnn: cannot write the convolution tuning cache {path} ({e}); "
                      f"this process keeps its choices in memory", TuningCacheWarning, stacklevel=3)
    _files[str(path)].update(entries)


# ------------------------------------------------------------------------- timing

def measure(steps: dict) -> dict:
    """{name: ms of steps[name]()} for {name: step}, each step one forward and backward pass: the
    fastest of up to REPEATS timed runs.

    Each step runs once untimed first: Numba's JIT compile (or its load from the disk cache) and
    the first touch of scratch buffers are not the algorithm's speed (their seconds are counted
    in spent().warmup_seconds). The fastest run, not the median: other processes only ever add
    time, and a lot of it (on 2 busy cores a 2-thread step waits whole 4 ms scheduler slices
    for its other thread: one step measured 2.4 to 24 ms, in steps of 4), so the fastest run is
    the one closest to what the algorithm costs on this machine."""
    start = perf_counter()
    for step in steps.values():
        step()
    _spent["warmup_seconds"] += perf_counter() - start
    times = {name: [] for name in steps}
    live, start = list(steps), perf_counter()
    for round_ in range(REPEATS):
        for name in live:
            t = perf_counter()
            steps[name]()
            times[name].append(perf_counter() - t)
        if round_ >= 1:  # two runs each before judging: one may have met a burst of load
            best = min(min(t) for t in times.values())
            live = [name for name in live if min(times[name]) <= CUTOFF * best]
        if perf_counter() - start > BUDGET_S:
            break
    return {name: 1e3 * min(t) for name, t in times.items()}


def random_problem(x_shape, w_shape, stride, pad):
    """x, W, b, dy: random float32 data of exactly this convolution's shapes (made once per shape,
    outside the timed runs)."""
    N, C, H, W = x_shape
    F, _, KH, KW = w_shape
    OH, OW = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    Wt = rng.standard_normal(w_shape, dtype=np.float32) * np.float32((2.0 / (C * KH * KW)) ** 0.5)  # He
    return x, Wt, np.zeros(F, np.float32), rng.standard_normal((N, F, OH, OW), dtype=np.float32)


# ------------------------------------------------------------------------- one backend's tuner

class Tuner:
    """One backend's convolution choice.

    algorithms: the algorithms it has; applies(algorithm, x_shape, w_shape, stride, pad) -> bool;
    table(x_shape, w_shape, stride, pad) -> the built-in choice; step(algorithm, x, W, b, stride,
    pad, dy): one forward and one backward pass (dx and dW) that runs ``algorithm`` itself, never
    through conv2d_algorithm; threads() -> the threads its kernels use now; timed: the algorithms
    worth timing (default all; one that always loses still costs a JIT compile on first use)."""

    def __init__(self, backend, algorithms, applies, table, step, threads, timed=None):
        self.backend, self.algorithms = backend, tuple(algorithms)
        self.timed = self.algorithms if timed is None else tuple(timed)  # those worth timing (and compiling)
        self.applies, self.table, self.step, self.threads = applies, table, step, threads
        TUNERS[backend] = self

    def candidates(self, x_shape, w_shape, stride, pad) -> list:
        """The algorithms that apply, the table's choice first (it wins a tie)."""
        first = self.table(x_shape, w_shape, stride, pad)
        found = [a for a in self.timed if self.applies(a, x_shape, w_shape, stride, pad)]
        return sorted(found, key=lambda a: a != first)

    def choice(self, x_shape, w_shape, stride, pad) -> Choice:
        """What conv2d_algorithm answers, and why: forced -> only -> table -> tuned."""
        forced = config.conv_algorithm()
        if forced in self.algorithms and self.applies(forced, x_shape, w_shape, stride, pad):
            return Choice(forced, "forced")
        if not config.tune():
            candidates = self.candidates(x_shape, w_shape, stride, pad)
            return Choice(candidates[0], "only" if len(candidates) == 1 else "table")
        known = _chosen.get((self.backend, tuple(x_shape), tuple(w_shape), stride, pad, self.threads()))
        return known if known is not None else self.tune(x_shape, w_shape, stride, pad)

    def algorithm(self, x_shape, w_shape, stride, pad) -> str:
        """The backend's conv2d_algorithm: the algorithm it runs for x (N, C, H, W) and W (F, C, KH,
        KW): the one FASTNN_CONV_ALGO forces where it applies; else the only one that applies; else,
        with FASTNN_TUNE=0, the table's; else the fastest on this machine, timed the first time the
        shape is used and kept in the tuning cache."""
        return self.choice(x_shape, w_shape, stride, pad).algorithm

    def key(self, x_shape, w_shape, stride, pad) -> str:
        machine_id, _ = machine(tuple(config.code_path_environment().items()))
        return (f"{self.backend} x={_dims(x_shape)} w={_dims(w_shape)} stride={stride} pad={pad} "
                f"threads={self.threads()} fastnn={VERSION} machine={machine_id}")

    def tune(self, x_shape, w_shape, stride, pad, retune=False) -> Choice:
        """The cached choice for this shape, else (or with ``retune``) time the candidates now
        and cache the fastest. Ignores FASTNN_CONV_ALGO and FASTNN_TUNE (``fastnn tune``)."""
        found = self._find(x_shape, w_shape, stride, pad, retune)
        _chosen[(self.backend, tuple(x_shape), tuple(w_shape), stride, pad, self.threads())] = found
        return found

    def _find(self, x_shape, w_shape, stride, pad, retune):
        candidates = self.candidates(x_shape, w_shape, stride, pad)
        if len(candidates) == 1:
            return Choice(candidates[0], "only")
        path, key = cache_file(), self.key(x_shape, w_shape, stride, pad)
        entries = _entries(path)
        entry = entries.get(key)
        if entry is not None and not retune:
            if set(entry["ms"]) == set(candidates):  # its algorithm is among them (_entry_problem)
                return Choice(entry["algorithm"], "tuned", dict(entry["ms"]))
            warnings.warn(f"fastnn: ignoring the entry {key!r} of the convolution tuning cache {path}: "
                          f"{sorted(entry['ms'])} are not this shape's candidates {candidates}; timing again",
                          TuningCacheWarning, stacklevel=3)
        global _tuning
        if _tuning:  # a step that asks conv2d_algorithm would time itself inside itself
            raise RuntimeError(f"{self.backend}: the convolution tuner was entered again while timing; "
                               f"a timed step must run its algorithm directly")
        start, _tuning = perf_counter(), True
        try:
            x, W, b, dy = random_problem(x_shape, w_shape, stride, pad)
            ms = measure({a: functools.partial(self.step, a, x, W, b, stride, pad, dy) for a in candidates})
        finally:
            _tuning = False
        ms = {a: float(ms[a]) for a in candidates}
        best = min(candidates, key=ms.__getitem__)  # the first of equals: the table's choice
        entries[key] = {"algorithm": best, "ms": ms, "seconds": perf_counter() - start}
        machine_id, description = machine(tuple(config.code_path_environment().items()))
        _save(path, machine_id, description)
        _spent["seconds"] += perf_counter() - start
        _spent["shapes"] += 1
        return Choice(best, "tuned", ms)


# ------------------------------------------------------------------------- for the commands

def choice(backend_name, x_shape, w_shape, stride, pad) -> Choice:
    """The choice of backend ``backend_name`` (any backend) for this shape, and why (a backend
    without conv2d_choice has one algorithm: "only"). May time the shape, as a first use does."""
    from . import load
    K = load(backend_name)
    explain = getattr(K, "conv2d_choice", None)
    if explain is not None:
        return explain(x_shape, w_shape, stride, pad)
    return Choice(K.conv2d_algorithm(x_shape, w_shape, stride, pad), "only")


def conv_shapes(model, batch_size) -> list:
    """[(layer index, x_shape, w_shape, stride, pad)] of ``model``'s convolutions at ``batch_size``."""
    shape, found = tuple(model.input_shape), []
    for index, layer in enumerate(model.layers):
        W = getattr(layer, "params", {}).get("W")
        if W is not None and len(W.shape) == 4:  # (F, C, KH, KW): a convolution (layers sit above us)
            found.append((index, (int(batch_size), *shape), tuple(W.shape), layer.stride, layer.pad))
        shape = layer.output_shape(shape)
    return found


def tune_model(model, backend_name, batch_size, retune=False) -> list:
    """Tune every convolution of ``model`` on backend ``backend_name`` at ``batch_size`` (cached
    shapes are not timed again unless ``retune``); one record per Conv2D layer:

        {"layer": index in model.layers, "x_shape", "w_shape", "stride", "pad",
         "algorithm", "source": "tuned" | "only", "ms": {algorithm: ms} or None,
         "timed": whether it was timed now (else read from the cache), "seconds": spent on it now}

    The thread count is part of the choice: set it first (fastnn.set_threads, or
    backends.use(backend_name), which applies it). A backend without a tuner (numpy, cuda) has
    one algorithm; its records say "only"."""
    from . import load
    K = load(backend_name)
    tuner = TUNERS.get(K.NAME)
    records = []
    for index, x_shape, w_shape, stride, pad in conv_shapes(model, batch_size):
        start, timed_before = perf_counter(), _spent["shapes"]
        if tuner is None:
            found = Choice(K.conv2d_algorithm(x_shape, w_shape, stride, pad), "only")
        else:
            found = tuner.tune(x_shape, w_shape, stride, pad, retune=retune)
        records.append({"layer": index, "x_shape": x_shape, "w_shape": w_shape, "stride": stride, "pad": pad,
                        "algorithm": found.algorithm, "source": found.source, "ms": found.ms,
                        "timed": _spent["shapes"] > timed_before, "seconds": perf_counter() - start})
    return records
