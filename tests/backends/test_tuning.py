"""The convolution tuner (fastnn/backends/tuning.py): each backend times the algorithms that
apply to a shape, keeps the fastest in an on-disk cache, and runs it.

* Given fake timings (tuning.measure patched), the fastest is chosen, and conv2d_forward and the
  fused kernels run it; real timings choose the fastest they measured, without the tuner
  entering itself.
* The cache outlives the process (two subprocesses: the second reads, never times), and a key
  part that differs (CPU flags, a code-path variable, threads, fastnn's version) times again.
* An unusable file (not JSON, foreign, another version, an entry that is not what the tuner
  writes) is ignored whole with a warning naming it, and rewritten valid.
* FASTNN_TUNE=0 gives the built-in table, FASTNN_CONV_ALGO forces, neither times anything.

Every test points XDG_CACHE_HOME at its own tmp_path: the user's cache is never touched.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from fastnn import backends, config, models
from fastnn.backends import tuning
from fastnn.errors import ConfigError

from ..conftest import load_or_skip

# a 3x3, stride-1, 8-channel layer: every algorithm applies, and both tables say "winograd"
SHAPE = ((4, 8, 10, 10), (8, 8, 3, 3), 1, 1)
# numba's direct is forced only: never timed (it loses everywhere, and timing would compile it)
CANDIDATES = {"numba": ["im2col", "winograd", "winograd4"], "cython": ["im2col", "winograd", "winograd4"]}
WINOGRAD4_FASTEST = {"im2col": 3.0, "direct": 4.0, "winograd": 2.0, "winograd4": 1.0}
IM2COL_FASTEST = {"im2col": 0.5, "direct": 4.0, "winograd": 2.0, "winograd4": 1.0}


@pytest.fixture
def cache_home(monkeypatch, tmp_path):
    """Tuning on, nothing forced, the cache in tmp_path; this process's memory of cache files cleared."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("FASTNN_TUNE", "1")
    monkeypatch.delenv("FASTNN_CONV_ALGO", raising=False)
    tuning.forget()
    yield tmp_path / "fastnn" / "conv-tuning.json"
    tuning.forget()


def fake_timings(monkeypatch, times):
    """Patch tuning.measure: ``times`` ms per algorithm; returns the list of candidate lists timed."""
    calls = []

    def measure(steps):
        calls.append(sorted(steps))
        return {name: times[name] for name in steps}
    monkeypatch.setattr(tuning, "measure", measure)
    return calls


def no_timing(monkeypatch):
    def measure(steps):
        raise AssertionError(f"timed {sorted(steps)}, but nothing should be timed here")
    monkeypatch.setattr(tuning, "measure", measure)


@pytest.fixture(params=["numba", "cython"])
def K(request):
    return load_or_skip(request.param)


# ------------------------------------------------------------------------------- the choice

@pytest.mark.parametrize("times", [WINOGRAD4_FASTEST, IM2COL_FASTEST], ids=["winograd4", "im2col"])
def test_the_fastest_is_chosen_and_run(K, cache_home, monkeypatch, times):
    calls = fake_timings(monkeypatch, times)
    want = min(CANDIDATES[K.NAME], key=times.get)
    choice = K.conv2d_choice(*SHAPE)
    assert choice == tuning.Choice(want, "tuned", {name: times[name] for name in CANDIDATES[K.NAME]})
    assert calls == [sorted(CANDIDATES[K.NAME])]  # every algorithm that applies, once
    assert K.conv2d_algorithm(*SHAPE) == want and len(calls) == 1  # kept: not timed again
    rng = np.random.default_rng(0)
    x, W, b = (rng.standard_normal(s, dtype=np.float32) for s in (SHAPE[0], SHAPE[1], SHAPE[1][0]))
    for kernel in ("conv2d_forward", "conv2d_relu_forward", "conv2d_relu_pool_forward"):
        _, cache = getattr(K, kernel)(x, W, b, 1, 1)
        assert cache[0] == want, kernel  # the cache names the algorithm that ran
    entry = json.loads(cache_home.read_text())["entries"]
    assert [e["algorithm"] for e in entry.values()] == [want]


def test_real_timings(K, cache_home):
    """Real timings: every candidate timed by its own step, the fastest chosen. A step that asked
    conv2d_algorithm (a tuner timing itself) would raise RuntimeError here."""
    before = tuning.spent()
    choice = K.conv2d_choice((2, 4, 6, 6), (4, 4, 3, 3), 1, 1)
    assert choice.source == "tuned" and sorted(choice.ms) == sorted(CANDIDATES[K.NAME])
    assert all(ms > 0 for ms in choice.ms.values())
    assert choice.algorithm == min(choice.ms, key=choice.ms.get)
    after = tuning.spent()
    assert after.shapes == before.shapes + 1 and after.seconds > before.seconds
    assert 0 < after.warmup_seconds - before.warmup_seconds <= after.seconds - before.seconds


def test_one_applicable_algorithm_is_not_timed(K, cache_home, monkeypatch):
    no_timing(monkeypatch)
    assert K.conv2d_choice((8, 4, 9, 9), (6, 4, 3, 3), 2, 1) == tuning.Choice("im2col", "only")
    assert not cache_home.exists()


def test_fastnn_tune_0_uses_the_table(K, cache_home, monkeypatch):
    monkeypatch.setenv("FASTNN_TUNE", "0")
    no_timing(monkeypatch)
    from importlib import import_module
    table = import_module(f"fastnn.backends.{K.NAME}.conv").table_algorithm
    for shape in [SHAPE, ((100, 1, 28, 28), (32, 1, 3, 3), 1, 0), ((100, 32, 26, 26), (64, 32, 3, 3), 1, 0)]:
        assert K.conv2d_choice(*shape) == tuning.Choice(table(*shape), "table")
    assert K.conv2d_choice(*SHAPE).algorithm == "winograd"
    assert not cache_home.exists()


def test_fastnn_conv_algo_forces(K, cache_home, monkeypatch):
    no_timing(monkeypatch)
    for algorithm in CANDIDATES[K.NAME]:
        monkeypatch.setenv("FASTNN_CONV_ALGO", algorithm)
        assert K.conv2d_choice(*SHAPE) == tuning.Choice(algorithm, "forced")
    monkeypatch.setenv("FASTNN_CONV_ALGO", "winograd")  # needs stride 1: the one that applies stands
    assert K.conv2d_choice((8, 4, 9, 9), (6, 4, 3, 3), 2, 1) == tuning.Choice("im2col", "only")
    assert not cache_home.exists()
    if K.NAME == "cython":  # numba's direct, which this backend lacks: the tuner decides
        monkeypatch.setenv("FASTNN_CONV_ALGO", "direct")
        fake_timings(monkeypatch, IM2COL_FASTEST)
        assert K.conv2d_choice(*SHAPE)[:2] == ("im2col", "tuned")


def test_fastnn_tune_setting(monkeypatch):
    monkeypatch.delenv("FASTNN_TUNE", raising=False)
    assert config.tune() is False  # off by default until the tuner times the fused kernels (config.tune)
    monkeypatch.setenv("FASTNN_TUNE", " On ")
    assert config.tune() is True
    monkeypatch.setenv("FASTNN_TUNE", " Off ")
    assert config.tune() is False
    monkeypatch.setenv("FASTNN_TUNE", "sometimes")
    with pytest.raises(ConfigError, match="FASTNN_TUNE='sometimes'"):
        config.tune()


# ------------------------------------------------------------------------------- the cache

SCRIPT = """
import json, sys
from fastnn.backends import tuning
from fastnn.backends.numba import conv
calls = []
def measure(steps):
    calls.append(sorted(steps))
    if sys.argv[1] == "read":
        raise AssertionError("timed again")
    return {name: {"winograd4": 1.0}.get(name, 5.0) for name in steps}
tuning.measure = measure
print(json.dumps({"choice": conv.conv2d_choice((4, 8, 10, 10), (8, 8, 3, 3), 1, 1), "calls": calls,
                  "file": str(tuning.cache_file())}))
"""


def test_the_cache_outlives_the_process(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), FASTNN_TUNE="1")
    env.pop("FASTNN_CONV_ALGO", None)
    results = []
    for mode in ("time", "read"):
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        results.append(json.loads(out.stdout))
    first, second = results
    assert first["file"] == second["file"] == str(tmp_path / "fastnn" / "conv-tuning.json")
    assert first["calls"] == [sorted(CANDIDATES["numba"])] and second["calls"] == []
    ms = {"im2col": 5.0, "winograd": 5.0, "winograd4": 1.0}
    assert first["choice"] == second["choice"] == ["winograd4", "tuned", ms]  # not the table's winograd


def test_what_decides_the_timing_is_in_the_key(cache_home, monkeypatch, tmp_path):
    """Another CPU (its ISA flags), another OpenBLAS core type, thread count or fastnn version:
    timed again. The same ones again, in a fresh process (forget()): read from the file."""
    from fastnn.backends.numba import conv
    from fastnn import config
    for name in config.CODE_PATH_VARIABLES:  # this run's own (OPENBLAS_CORETYPE=Haswell, say) aside
        monkeypatch.delenv(name, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(tuning, "CPUINFO", str(cpuinfo))
    calls = fake_timings(monkeypatch, WINOGRAD4_FASTEST)

    def timed_now(flags="fpu sse2 avx avx2 fma"):
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        tuning.forget()  # a new process: the fingerprint and the file read again
        count = len(calls)
        assert conv.conv2d_choice(*SHAPE).algorithm == "winograd4"
        return len(calls) - count

    assert timed_now() == 1
    assert timed_now() == 0
    assert timed_now("fpu sse2 avx avx2 fma avx512f avx512bw") == 1
    assert timed_now() == 0  # both machines' entries kept
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert timed_now() == 1
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    threads = conv._tuner.threads
    monkeypatch.setattr(conv._tuner, "threads", lambda: threads() + 5)
    assert timed_now() == 1
    monkeypatch.setattr(conv._tuner, "threads", threads)
    monkeypatch.setattr(tuning, "VERSION", "999.0")
    assert timed_now() == 1
    data = json.loads(cache_home.read_text())
    assert len(data["machines"]) == 3 and len(data["entries"]) == 5


def test_entries_other_processes_wrote_are_kept(cache_home, monkeypatch):
    from fastnn.backends.numba import conv
    fake_timings(monkeypatch, WINOGRAD4_FASTEST)
    conv.conv2d_choice(*SHAPE)
    data = json.loads(cache_home.read_text())
    (key, entry), = data["entries"].items()
    data["entries"][key.replace("x=4x", "x=5x")] = entry  # another process, since this one read it
    cache_home.write_text(json.dumps(data))
    conv.conv2d_choice((6, 8, 10, 10), (8, 8, 3, 3), 1, 1)
    keys = json.loads(cache_home.read_text())["entries"]
    assert len(keys) == 3 and key.replace("x=4x", "x=5x") in keys


def _entry(data):
    return next(iter(data["entries"].values()))


# (what is done to a valid file, words the warning must contain); the file's own entry stays where
# the damage is elsewhere, and must not be trusted either
DAMAGE = {
    "not JSON": (lambda text, data: text[: len(text) // 2], "not JSON"),
    "not UTF-8": (lambda text, data: b"\xff\xfe" + text.encode(), "not JSON"),
    "a list": (lambda text, data: [data], "a JSON list, not an object"),
    "foreign": (lambda text, data: {**data, "format": "someone-elses-cache"}, "format 'someone-elses-cache'"),
    "no format": (lambda text, data: {"entries": data["entries"]}, "format None"),
    "other version": (lambda text, data: {**data, "version": 2}, "format version 2"),
    "entries a list": (lambda text, data: {**data, "entries": []}, "'entries' or 'machines' is not an object"),
    "unknown algorithm": (lambda text, data: {**data, "entries": {**data["entries"], "x": {
        "algorithm": "fft", "ms": {"fft": 1.0}, "seconds": 0.1}}}, "unknown algorithm 'fft'"),
    "unknown timed": (lambda text, data: {**data, "entries": {**data["entries"], "x": {
        "algorithm": "im2col", "ms": {"im2col": 1.0, "fft": 2.0}, "seconds": 0.1}}}, "unknown algorithm 'fft' in ms"),
    "ms a string": (lambda text, data: {**data, "entries": {**data["entries"], "x": {
        "algorithm": "im2col", "ms": {"im2col": "fast"}, "seconds": 0.1}}}, "ms['im2col'] is 'fast'"),
    "ms a bool": (lambda text, data: {**data, "entries": {**data["entries"], "x": {
        "algorithm": "im2col", "ms": {"im2col": True}, "seconds": 0.1}}}, "ms['im2col'] is True"),
    "entry a list": (lambda text, data: {**data, "entries": {**data["entries"], "x": ["im2col"]}},
                     "not an object but list"),
    "no seconds": (lambda text, data: {**data, "entries": {**data["entries"], "x": {
        "algorithm": "im2col", "ms": {"im2col": 1.0}}}}, "seconds is None"),
    "not the fastest": (lambda text, data: {**data, "entries": {k: {**e, "algorithm": "im2col"}
                                                                for k, e in data["entries"].items()}},
                        "'im2col' is not the fastest"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_an_unusable_cache_is_ignored_with_a_warning_and_rewritten(cache_home, monkeypatch, damage):
    from fastnn.backends.numba import conv
    fake_timings(monkeypatch, WINOGRAD4_FASTEST)
    assert conv.conv2d_algorithm(*SHAPE) == "winograd4"
    text = cache_home.read_text()
    change, words = DAMAGE[damage]
    damaged = change(text, json.loads(text))
    if isinstance(damaged, bytes):
        cache_home.write_bytes(damaged)
    else:
        cache_home.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    tuning.forget()
    calls = fake_timings(monkeypatch, IM2COL_FASTEST)
    with pytest.warns(tuning.TuningCacheWarning, match=re.escape(str(cache_home)) + ".*" + re.escape(words)):
        assert conv.conv2d_choice(*SHAPE)[:2] == ("im2col", "tuned")  # timed again, nothing trusted
    assert len(calls) == 1
    data = json.loads(cache_home.read_text())
    assert tuning._problem(data) is None and _entry(data)["algorithm"] == "im2col"
    assert list(cache_home.parent.glob("*.tmp")) == []  # the atomic write left no temporary


def test_an_entry_for_other_candidates_is_timed_again(cache_home, monkeypatch):
    """A valid entry whose candidates are not this shape's (a file edited by hand, or one whose
    key another backend's algorithms ended up under) is not used."""
    from fastnn.backends.numba import conv
    fake_timings(monkeypatch, WINOGRAD4_FASTEST)
    conv.conv2d_choice(*SHAPE)
    data = json.loads(cache_home.read_text())
    for entry in data["entries"].values():
        entry["ms"].pop("winograd")
    cache_home.write_text(json.dumps(data))
    tuning.forget()
    calls = fake_timings(monkeypatch, IM2COL_FASTEST)
    with pytest.warns(tuning.TuningCacheWarning, match="not this shape's candidates"):
        assert conv.conv2d_algorithm(*SHAPE) == "im2col"
    assert len(calls) == 1


def test_an_unwritable_cache_warns_and_the_choice_holds(monkeypatch, tmp_path):
    (tmp_path / "fastnn").write_text("a file where the cache directory should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("FASTNN_TUNE", "1")
    monkeypatch.delenv("FASTNN_CONV_ALGO", raising=False)
    tuning.forget()
    from fastnn.backends.numba import conv
    calls = fake_timings(monkeypatch, WINOGRAD4_FASTEST)
    with pytest.warns(tuning.TuningCacheWarning) as warned:
        assert conv.conv2d_algorithm(*SHAPE) == "winograd4"
    assert [str(w.message).split(" (")[0] for w in warned] == [
        f"fastnn: ignoring the convolution tuning cache {tmp_path}/fastnn/conv-tuning.json: cannot be read",
        f"fastnn: cannot write the convolution tuning cache {tmp_path}/fastnn/conv-tuning.json"]
    assert conv.conv2d_algorithm(*SHAPE) == "winograd4" and len(calls) == 1  # kept in memory
    tuning.forget()


# ------------------------------------------------------------------------------- a whole model

def test_tune_model(cache_home, monkeypatch):
    calls = fake_timings(monkeypatch, WINOGRAD4_FASTEST)
    model = models.build("deep-cnn")
    before = tuning.spent().shapes
    records = tuning.tune_model(model, "numba", 50)
    convs = [(1, 28), (16, 28), (16, 14), (32, 14), (32, 8), (64, 8)]  # (C, H) of each conv's input
    assert [r["x_shape"] for r in records] == [(50, c, h, h) for c, h in convs]
    assert [r["layer"] for r in records] == [0, 2, 5, 7, 10, 12]
    assert [r["pad"] for r in records] == [1, 1, 1, 2, 1, 1]
    assert all(r["algorithm"] == "winograd4" and r["source"] == "tuned" and r["timed"] for r in records)
    timed = {a: WINOGRAD4_FASTEST[a] for a in CANDIDATES["numba"]}
    assert records[0]["ms"] == timed and len(calls) == 6 and tuning.spent().shapes == before + 6
    again = tuning.tune_model(model, "numba", 50)  # cached: not timed
    assert not any(r["timed"] for r in again) and len(calls) == 6
    assert [r["algorithm"] for r in again] == [r["algorithm"] for r in records]
    tuning.tune_model(model, "numba", 50, retune=True)
    assert len(calls) == 12
    reference = tuning.tune_model(model, "numpy", 50)  # one algorithm, no tuner
    assert [(r["algorithm"], r["source"], r["ms"]) for r in reference] == [("im2col", "only", None)] * 6
    assert tuning.choice("numba", (50, 16, 28, 28), (16, 16, 3, 3), 1, 1) == ("winograd4", "tuned", timed)
    assert tuning.choice("numpy", (50, 16, 28, 28), (16, 16, 3, 3), 1, 1) == ("im2col", "only", None)
    assert backends.load("numba").conv2d_choice is not None  # exported by the backend table (contract.OPTIONAL)
