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

from fastnn.cli import main

HAS_TORCH = importlib.util.find_spec("torch") is not None
PER_RESULT = {"images_per_second", "images_per_second_min", "images_per_second_max", "compile_seconds",
              "compile_seconds_first_run", "ratio_to_torch", "ratio_to_numpy", "runs", "failed_runs", "data",
              "threadpools"}
PER_RUN = {"pid", "images", "seconds", "images_per_second", "compile_seconds", "threads"}


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
    """cuda here is the simulator (tests/conftest.py) or absent: listed with why, never timed."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "mlp", "--backends", "cuda", "--no-torch", "--images", "100",
                 "--repeats", "2", "--threads", "1", "--json", str(out)]) == 0
    cuda = json.loads(out.read_text())["models"]["mlp"]["results"]["cuda"]
    assert set(cuda) == {"skipped"} and ("simulator" in cuda["skipped"] or "GPU" in cuda["skipped"])
    assert "cuda       skipped: " in capsys.readouterr().out


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
