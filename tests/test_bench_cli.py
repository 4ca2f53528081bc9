"""`fastnn bench`: every backend really runs in its own process, and the JSON keeps every field and
the machine's facts. Tiny runs (mlp, 200 images): these check what the command measures and
writes, never how fast anything is."""
import contextlib
import importlib.util
import io
import json
import os
import sys

import pytest

from fastnn import bench
from fastnn.cli import main

from .conftest import SIMULATED_CUDA

HAS_TORCH = importlib.util.find_spec("torch") is not None
PER_RESULT = {"images_per_second", "images_per_second_min", "images_per_second_max", "compile_seconds",
              "compile_seconds_first_run", "ratio_to_torch", "ratio_to_best_torch", "ratio_to_numpy", "runs",
              "failed_runs", "data",
              "threadpools"}
PER_RUN = {"pid", "images", "seconds", "images_per_second", "compile_seconds", "threads"}
NO_TORCH = ("torch is not a fastnn dependency: PyTorch's modes need it "
            "(pip install torch==2.13.0, the CPU build)")
TORCH_ENTRIES = ["torch", "torch-channels_last", "torch-compile"]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One `fastnn bench` of three backends (and PyTorch where it is installed), 2 runs each on 2
    threads, with --json and --plot; shared by the tests below (about 15 s of worker processes)."""
    out = tmp_path_factory.mktemp("bench")
    argv = ["bench", "--model", "mlp", "--backends", "numpy,numba,cython", "--images", "200", "--repeats", "2",
            "--threads", "2", "--json", str(out / "bench.json")]
    if importlib.util.find_spec("matplotlib") is not None:
        argv += ["--plot", str(out / "bench.png")]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    return code, json.loads((out / "bench.json").read_text()), printed.getvalue(), out


def test_bench_writes_every_field(bench_run):
    code, report, printed, _ = bench_run
    assert code == 0
    assert (report["images"], report["threads"], report["repeats"]) == (200, 2, 2)
    assert list(report["models"]) == ["mlp"]
    mlp = report["models"]["mlp"]
    assert (mlp["batch_size"], mlp["optimizer"], mlp["lr"]) == (100, "adam", 1e-3)
    expected = ["numpy", "numba", "cython", "torch"]  # torch measured, or listed as skipped with its reason
    assert list(mlp["results"]) == expected
    for name in expected[:3]:
        r = mlp["results"][name]
        assert "error" not in r and "skipped" not in r, r
        assert PER_RESULT <= set(r), PER_RESULT - set(r)
        assert len(r["runs"]) == 2 and all(PER_RUN <= set(run) for run in r["runs"])
        assert all(run["images"] == 200 and run["seconds"] > 0 and run["threads"] == 2 for run in r["runs"])
        assert r["images_per_second_min"] <= r["images_per_second"] <= r["images_per_second_max"]
        assert r["ratio_to_numpy"] == pytest.approx(r["images_per_second"] / mlp["results"]["numpy"]["images_per_second"])
        assert r["compile_seconds"] >= 0
    if HAS_TORCH:
        torch = mlp["results"]["torch"]
        assert torch["ratio_to_torch"] == 1.0 and torch["torch"]
        assert mlp["results"]["numba"]["ratio_to_torch"] == pytest.approx(
            mlp["results"]["numba"]["images_per_second"] / torch["images_per_second"])
    else:
        assert "torch is not importable" in mlp["results"]["torch"]["skipped"]
        assert mlp["results"]["numpy"]["ratio_to_torch"] is None
    for name in expected:
        assert f"\n{name:8s} " in printed  # a row of the table


def test_each_run_is_its_own_process(bench_run):
    """Every run of every backend has a process id of its own, none of them this process's; and
    the worker's thread pools are the backend's: BLAS on all threads under numpy, on one under
    numba and cython (which parallelise around it)."""
    _, report, _, _ = bench_run
    assert report["parent_pid"] == os.getpid()
    results = report["models"]["mlp"]["results"]
    measured = [r for r in results.values() if "runs" in r]  # torch is skipped where it is not installed
    assert len(measured) == 3 + HAS_TORCH
    pids = [run["pid"] for r in measured for run in r["runs"]]
    assert len(pids) == len(set(pids)) == 2 * len(measured)
    assert os.getpid() not in pids
    for name, blas_threads in (("numpy", 2), ("numba", 1), ("cython", 1)):
        pools = [p for p in results[name]["threadpools"] if p["user_api"] == "blas"]
        assert pools and all(p["num_threads"] == blas_threads for p in pools), (name, pools)


def test_machine_facts_are_printed_and_kept(bench_run):
    _, report, printed, _ = bench_run
    facts = report["machine"]
    assert facts["cpu"] and facts["threads"] == 2
    assert facts["logical_cores"] >= 1 and facts["usable_cores"] >= 1
    assert set(facts["openblas_env"]) == {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}
    blas = [b for b in facts["blas"] if b["user_api"] == "blas"]
    assert blas and all(b["internal_api"] and b["version"] for b in blas)
    if any(b["internal_api"] == "openblas" for b in blas):
        assert all(b["architecture"] for b in blas if b["internal_api"] == "openblas")  # the kernel type
    versions = facts["versions"]
    assert versions["fastnn"] and versions["numpy"] and versions["numba"]
    assert (versions["torch"] is not None) == HAS_TORCH
    assert facts["python"] == ".".join(map(str, sys.version_info[:3]))
    assert f"machine: {facts['cpu']}" in printed and "BLAS: " in printed and "versions: fastnn" in printed


def test_bench_plot(bench_run):
    pytest.importorskip("matplotlib")
    *_, out = bench_run
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_backend_that_cannot_run_is_skipped_with_its_reason(tmp_path, capsys):
    """Without a GPU, cuda is the simulator (tests/conftest.py turns it on; the workers inherit it),
    whose timings mean nothing, or it cannot load: listed with why, never timed. With a GPU it runs,
    and is timed like any backend."""
    from fastnn import backends
    cannot_load = backends.available()["cuda"]   # None where it loads: on a GPU, or in the simulator
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "mlp", "--backends", "cuda", "--no-torch", "--images", "100",
                 "--repeats", "2", "--threads", "1", "--json", str(out)]) == 0
    cuda = json.loads(out.read_text())["models"]["mlp"]["results"]["cuda"]
    printed = capsys.readouterr().out
    if cannot_load is None and not SIMULATED_CUDA:   # a GPU
        assert "skipped" not in cuda and "error" not in cuda, cuda
        assert len(cuda["runs"]) == 2 and all(run["images"] == 100 and run["seconds"] > 0 for run in cuda["runs"])
        assert "cuda       skipped: " not in printed
        return
    assert set(cuda) == {"skipped"}
    if cannot_load is None:
        assert cuda["skipped"].startswith("the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) runs every GPU thread")
    else:
        assert cuda["skipped"] == cannot_load   # what the worker's load said, as available() says it here
    assert "cuda       skipped: " in printed


def test_plot_without_matplotlib_says_how_to_install_it_before_measuring(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    monkeypatch.setattr("fastnn.bench.run_worker", lambda *a, **k: pytest.fail("measured before checking"))
    assert main(["bench", "--model", "mlp", "--backends", "numpy", "--plot", str(tmp_path / "b.png")]) == 1
    assert 'pip install "fastnn[plot]"' in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--backends", "numpy,tpu"], "unknown backend 'tpu'"),
    (["--repeats", "0"], "must be 1 or more"),
    (["--model", "resnet"], "invalid choice: 'resnet'"),
])
def test_bad_bench_arguments(argv, message, monkeypatch, capsys):
    monkeypatch.setattr("fastnn.bench.run_worker", lambda *a, **k: pytest.fail("measured a bad request"))
    try:
        code = main(["bench", *argv])
    except SystemExit as e:  # argparse: usage error
        code = e.code
    assert code in (1, 2)
    assert message in capsys.readouterr().err


def test_a_failed_worker_fails_the_command(tmp_path, monkeypatch, capsys):
    """A worker that crashes (here: a setting it refuses) is an error in the table and the JSON, and
    the exit status says so; the command does not pretend it measured anything."""
    monkeypatch.setenv("FASTNN_FUSION", "bogus")  # read by the worker when it builds the model
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "mlp", "--backends", "numpy", "--no-torch", "--images", "100", "--repeats", "1",
                 "--threads", "1", "--json", str(out)]) == 1
    numpy = json.loads(out.read_text())["models"]["mlp"]["results"]["numpy"]
    assert "FASTNN_FUSION" in numpy["error"] and "images_per_second" not in numpy
    assert "1 measurement(s) failed: mlp/numpy" in capsys.readouterr().err


# ---- --torch-modes: PyTorch's channels_last and torch.compile beside eager, each an entry of its own


@pytest.mark.parametrize("value,message", [
    ("eager,jit", "unknown PyTorch mode 'jit': choose from eager, channels_last, compile"),
    (",", "no PyTorch mode in ',': choose from eager, channels_last, compile"),
])
def test_a_bad_torch_mode_is_a_usage_error(value, message, monkeypatch, capsys):
    monkeypatch.setattr("fastnn.bench.run_worker", lambda *a, **k: pytest.fail("measured a bad request"))
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--torch-modes", value])
    assert exit_.value.code == 2
    usage, error = capsys.readouterr().err.split("fastnn bench: error: ")
    assert usage.startswith("usage: fastnn bench")
    assert error == f"argument --torch-modes: {message}\n"  # the reason, on one line


def test_torch_modes_and_no_torch_contradict(monkeypatch, capsys):
    monkeypatch.setattr("fastnn.bench.run_worker", lambda *a, **k: pytest.fail("measured a bad request"))
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--no-torch", "--torch-modes", "compile"])
    assert exit_.value.code == 2
    assert "argument --torch-modes: not allowed with argument --no-torch" in capsys.readouterr().err


def test_the_plan_of_workers():
    """Backends first, then PyTorch's modes in a fixed order whatever order they were named in,
    eager keeping its old name "torch"; PyTorch on the GPU (eager) only beside the cuda backend."""
    assert bench.contestants(["numpy", "numba"]) == ["numpy", "numba", "torch"]  # the default: eager only
    assert bench.contestants(["numpy"], ["compile", "eager", "channels_last"]) == ["numpy", *TORCH_ENTRIES]
    assert bench.contestants(["numpy"], ["compile"]) == ["numpy", "torch-compile"]
    assert bench.contestants(["cuda"], ["channels_last"]) == ["cuda", "torch-channels_last", "torch-cuda"]
    assert bench.contestants(["numpy", "cuda"], ()) == ["numpy", "cuda"]  # --no-torch


def fake_worker(calls, rates, compile_seconds, skipped=None):
    """Stands in for run_worker: records (name, threads, extra environment) of each call and returns a
    run of 200 images at ``rates[name]`` images/s; ``skipped`` {name: reason} cannot run."""
    def run_worker(spec, threads, extra_env=None):
        name = spec["backend"]
        calls.append((name, spec["threads"], threads, dict(extra_env or {})))
        if name in (skipped or {}):
            return {"skipped": skipped[name], "pid": 1}
        return {"images": 200, "seconds": 200 / rates[name], "compile_seconds": compile_seconds[name],
                "data": "random", "threads": threads, "pid": 1000 + len(calls)}
    return run_worker


def test_every_torch_mode_is_an_entry_measured_in_turn(tmp_path, monkeypatch, capsys):
    """Without torch (CI), through a stand-in worker: each mode is its own worker, in the A B C A B C
    order with the backends and on the same threads; its compile seconds stay out of images/s; the
    ratios go to eager and to the fastest mode; --fresh-cache empties torch.compile's cache for a first run."""
    rates = {"numpy": 1000, "torch": 2000, "torch-channels_last": 2500, "torch-compile": 4000}
    compile_seconds = {"numpy": 0.1, "torch": 0.3, "torch-channels_last": 0.3, "torch-compile": 40.0}
    calls = []
    monkeypatch.setattr("fastnn.bench.torch_missing", lambda: None)  # as if torch were installed
    monkeypatch.setattr("fastnn.bench.run_worker", fake_worker(calls, rates, compile_seconds))
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "mlp", "--backends", "numpy", "--torch-modes", "compile,eager,channels_last",
                 "--repeats", "2", "--threads", "2", "--fresh-cache", "--json", str(out)]) == 0
    round_ = ["numpy", *TORCH_ENTRIES]
    assert [c[0] for c in calls] == ["numpy", "torch", "torch-channels_last", "torch-compile", "torch-compile",
                                     *round_]  # torch-compile's first run fills its empty cache
    assert all(spec_threads == threads == 2 for _, spec_threads, threads, _ in calls)
    compile_caches = {c[3]["TORCHINDUCTOR_CACHE_DIR"] for c in calls if c[0] == "torch-compile"}
    assert len(compile_caches) == 1  # one cache: filled by the first run, loaded by the measured ones
    assert all(not env for name, _, _, env in calls if name != "torch-compile")

    report = json.loads(out.read_text())
    assert report["options"]["torch_modes"] == ["compile", "eager", "channels_last"]
    mlp = report["models"]["mlp"]
    results = mlp["results"]
    assert list(results) == round_ and mlp["best_torch"] == "torch-compile"
    compiled = results["torch-compile"]
    assert compiled["images_per_second"] == pytest.approx(4000)  # the compile seconds are not in it
    assert compiled["compile_seconds"] == 40.0 and compiled["compile_seconds_first_run"] == 40.0
    assert len(compiled["runs"]) == 2
    for name, rate in rates.items():
        assert results[name]["ratio_to_torch"] == pytest.approx(rate / 2000)
        assert results[name]["ratio_to_best_torch"] == pytest.approx(rate / 4000)
    printed = capsys.readouterr().out
    table = printed[printed.index("\nbackend "):]
    assert "vs torch" in table and "vs best" in table
    assert "\ntorch-channels_last      2,500 " in table
    assert "vs best: over the fastest PyTorch measured here, torch-compile" in table


def test_a_torch_compile_that_fails_is_a_skip_not_a_failed_bench(tmp_path, monkeypatch, capsys):
    """The worker reports a compilation that fails here as a skip with its reason: the entry says so
    in one line, is not tried again, and the rest of the bench stands (exit 0); "vs best" is then
    over the fastest mode that did run."""
    rates = {"numpy": 1000, "torch": 2000}
    reason = "torch.compile failed here: InductorError: InvalidCxxCompiler: No working C++ compiler found"
    calls = []
    monkeypatch.setattr("fastnn.bench.torch_missing", lambda: None)
    monkeypatch.setattr("fastnn.bench.run_worker", fake_worker(calls, rates, dict.fromkeys(rates, 0.1),
                                                               skipped={"torch-compile": reason}))
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "mlp", "--backends", "numpy", "--torch-modes", "eager,compile",
                 "--repeats", "2", "--threads", "1", "--json", str(out)]) == 0
    assert [c[0] for c in calls] == ["numpy", "torch", "torch-compile", "numpy", "torch"]
    mlp = json.loads(out.read_text())["models"]["mlp"]
    assert mlp["results"]["torch-compile"] == {"skipped": reason}
    assert mlp["best_torch"] == "torch" and mlp["results"]["numpy"]["ratio_to_best_torch"] == pytest.approx(0.5)
    printed = capsys.readouterr().out
    assert f"\n  torch-compile skipped: {reason}\n" in printed  # as the worker said it
    assert "\ntorch-compile          -  skipped: torch.compile failed here: " in printed  # the table's row
    assert "torch-compile: its first" not in printed  # no compile seconds to explain


def test_without_torch_every_mode_is_listed_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr("fastnn.bench.torch_missing", lambda: "torch is not importable (pip install torch)")
    monkeypatch.setattr("fastnn.bench.run_worker", fake_worker([], {"numpy": 1000}, {"numpy": 0.1}))
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "mlp", "--backends", "numpy", "--torch-modes", "eager,channels_last,compile",
                 "--repeats", "1", "--json", str(out)]) == 0
    mlp = json.loads(out.read_text())["models"]["mlp"]
    assert mlp["best_torch"] is None and mlp["results"]["numpy"]["ratio_to_best_torch"] is None
    assert [mlp["results"][name] for name in TORCH_ENTRIES] == [{"skipped": "torch is not importable "
                                                                 "(pip install torch)"}] * 3


@pytest.mark.skipif(not HAS_TORCH, reason=NO_TORCH)
def test_the_worker_reports_a_failed_compile_as_one_line(monkeypatch, capsys):
    """In the worker (here in this process): torch.compile's error, pages long in life, becomes a
    skip whose reason is its first line."""
    import torch

    def compile_that_fails(model):
        def run(x):
            raise RuntimeError("C++ compile error\n" + "the compiler's log\n" * 50)
        return run
    monkeypatch.setattr(torch, "compile", compile_that_fails)
    threads = torch.get_num_threads()
    try:
        bench.worker_main(json.dumps({"backend": "torch-compile", "model": "mlp", "batch_size": 10,
                                      "optimizer": "adam", "lr": 1e-3, "images": 20, "threads": 1, "data": None,
                                      "profile_steps": 0}))
    finally:
        torch.set_num_threads(threads)
    result = json.loads(capsys.readouterr().out.removeprefix(bench.RESULT_PREFIX))
    assert result["skipped"] == "torch.compile failed here: RuntimeError: C++ compile error"


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TORCH, reason=NO_TORCH)
def test_every_torch_mode_really_runs(tmp_path, capsys):
    """eager, channels_last and torch.compile, each in its own process on the same threads; compile's
    first steps are its compile seconds, outside images/s. Tiny: mlp, 2 timed steps (torch.compile of
    the mlp takes tens of seconds with an empty inductor cache, a few with a filled one)."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "mlp", "--backends", "numpy", "--torch-modes", "eager,channels_last,compile",
                 "--images", "200", "--repeats", "1", "--threads", "2", "--json", str(out)]) == 0
    mlp = json.loads(out.read_text())["models"]["mlp"]
    results = mlp["results"]
    assert list(results) == ["numpy", *TORCH_ENTRIES]
    if "skipped" in results["torch-compile"]:  # a machine without a working C++ compiler
        assert results["torch-compile"]["skipped"].startswith("torch.compile failed here: ")
        assert "\n" not in results["torch-compile"]["skipped"]
    measured = {name: results[name] for name in TORCH_ENTRIES if "skipped" not in results[name]}
    pids = [r["runs"][0]["pid"] for r in measured.values()]
    assert len(set(pids)) == len(pids) and os.getpid() not in pids
    for name, r in measured.items():
        assert "error" not in r, r
        (run,) = r["runs"]
        assert r["torch_mode"] == name.removeprefix("torch-").replace("torch", "eager")
        assert run["threads"] == 2 and run["images"] == 200
        assert r["images_per_second"] == pytest.approx(run["images"] / run["seconds"])
        assert r["compile_seconds"] > 0 and r["ratio_to_best_torch"] <= 1.0
    if "torch-compile" in measured:
        assert measured["torch-compile"]["warmup_steps"] == bench.TORCH_COMPILE_WARMUP_STEPS
    assert mlp["best_torch"] in measured
    assert results[mlp["best_torch"]]["ratio_to_best_torch"] == 1.0
    assert "vs best" in capsys.readouterr().out
