"""The command line contract: fastnn train / evaluate / info, and clean errors."""
import json
import os
import subprocess
import sys

import pytest

from fastnn.cli import main


def test_train_writes_metrics_json_and_a_model(mnist_dir, tmp_path, capsys):
    metrics, model = tmp_path / "m.json", tmp_path / "model.npz"
    code = main(["train", "--model", "mlp", "--epochs", "2", "--limit", "2000", "--batch-size", "50",
                 "--optimizer", "momentum", "--lr", "0.05", "--schedule", "constant", "--label-smoothing", "0",
                 "--data", str(mnist_dir), "--seed", "1",
                 "--threads", "1", "--metrics", str(metrics), "--save", str(model), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "test accuracy" in out
    data = json.loads(metrics.read_text())
    assert {k: data[k] for k in ("model", "threads", "batch_size", "optimizer", "lr")} == {
        "model": "mlp", "threads": 1, "batch_size": 50, "optimizer": "momentum", "lr": 0.05}
    assert data["backend"] in ("numpy", "numba", "cython", "cuda") and data["compile_seconds"] >= 0
    assert [e["epoch"] for e in data["epochs"]] == [1, 2]
    for epoch in data["epochs"]:
        assert set(epoch) >= {"epoch", "train_seconds", "images_per_second", "train_loss", "test_loss",
                              "test_accuracy"}
        assert 0.8 < epoch["test_accuracy"] <= 1.0  # a fraction, not a percentage
        assert epoch["images_per_second"] == pytest.approx(2000 / epoch["train_seconds"])

    assert main(["evaluate", str(model), "--data", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{100 * data['epochs'][-1]['test_accuracy']:.2f}%" in out


def test_train_plot(mnist_dir, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"
    assert main(["train", "--model", "mlp", "--epochs", "2", "--limit", "500", "--data", str(mnist_dir),
                 "--plot", str(plot), "--no-progress"]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_lists_every_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("numpy", "numba", "cython", "cuda"):
        assert f"  {name} " in out
    assert "threads:" in out and "numpy" in out


@pytest.mark.parametrize("argv,message", [
    (["train", "--epochs", "0"], "must be 1 or more"),
    (["train", "--lr", "-1"], "must be a positive number"),
    (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
    (["train", "--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
    (["train", "--backend", "tpu"], "invalid choice: 'tpu'"),
    (["train", "--batch-size", "ten"], "expected a whole number"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_arguments_give_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fastnn" in err and message in err and "Traceback" not in err


def test_missing_data_is_one_clear_line(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), FASTNN_DATA=str(tmp_path / "none"))
    result = subprocess.run([sys.executable, "-m", "fastnn", "evaluate", str(tmp_path / "nope.npz")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "fastnn evaluate: error:" in result.stderr and "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_backend_in_the_environment(tmp_path):
    env = dict(os.environ, FASTNN_BACKEND="bogus")
    result = subprocess.run([sys.executable, "-m", "fastnn", "train", "--limit", "10"], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 1
    assert "FASTNN_BACKEND" in result.stderr and "numpy, numba, cython, cuda" in result.stderr
    assert "Traceback" not in result.stderr


def test_tune_times_once_and_then_reads_the_cache(tmp_path, monkeypatch, capsys):
    """fastnn tune: every convolution of deep-cnn that has a choice is timed on the first run and
    read from the cache file on the second; info counts the choices; numpy has nothing to tune."""
    from fastnn.backends import tuning
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tuning.forget()
    argv = ["tune", "--model", "deep-cnn", "--backend", "cython", "--threads", "1", "--batch-size", "2"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert first.count("(timed now)") == 6 and "(the only one)" not in first, first  # all six: 3x3 stride 1
    assert "tuned 6 shape(s)" in first and (tmp_path / "fastnn" / "conv-tuning.json").is_file()
    tuning.forget()  # as a new process: only the file remembers
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert second.count("(cached)") == 6 and "(timed now)" not in second and "tuned 0 shape(s)" in second, second
    assert main(["info"]) == 0
    assert "6 choice(s), 6 of them for this machine" in capsys.readouterr().out
    assert main(["tune", "--model", "deep-cnn", "--backend", "numpy"]) == 0
    assert "nothing to tune" in capsys.readouterr().out
    tuning.forget()
