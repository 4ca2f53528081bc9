"""Bad input everywhere: the public API and the command line refuse it with a fastnn error that
says what is wrong, the CLI exits non-zero with one line, and no file on disk is damaged."""
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastnn import backends, config, models, optim
from fastnn.cli import main
from fastnn.data import FILES, load_mnist, parse_idx, read_idx
from fastnn.errors import ConfigError, DataError, ShapeError
from fastnn.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from fastnn.model import Sequential
from fastnn.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def numpy_backend():
    backends.use("numpy")


@pytest.fixture
def model():
    rng = np.random.default_rng(0)
    return Sequential([Conv2D(1, 2, 3, rng=rng), ReLU(), MaxPool2D(2), Flatten(), Dense(2 * 3 * 3, 4, rng=rng)],
                      (1, 8, 8), name="tiny")


def images(n, dtype=np.float32):
    return np.random.default_rng(0).random((n, 1, 8, 8)).astype(dtype)


# ---------------------------------------------------------------------- layers
def test_wrong_shapes_name_the_layer_and_the_expected_shape():
    cases = [
        (Dense(4, 3), np.zeros((2, 5), np.float32), "Dense: expected input of shape (N, 4), got (2, 5)"),
        (Dense(4, 3), np.zeros((2, 2, 2), np.float32), "Dense: expected input of shape (N, 4)"),
        (Conv2D(3, 2, 3), np.zeros((2, 1, 8, 8), np.float32), "Conv2D: expected input of shape (N, 3, H, W)"),
        (Conv2D(1, 2, 5), np.zeros((2, 1, 4, 4), np.float32), "Conv2D: a 4x4 input is smaller than the 5x5 kernel"),
        (MaxPool2D(2), np.zeros((2, 8, 8), np.float32), "MaxPool2D: expected input of shape (N, C, H, W)"),
        (BatchNorm(4), np.zeros((2, 5), np.float32), "BatchNorm: expected input of shape (N, 4) or (N, 4, H, W)"),
        (BatchNorm(4), np.zeros((2, 4, 3), np.float32), "BatchNorm: expected input of shape (N, 4)"),
        (ReLU(), np.zeros((0, 3), np.float32), "ReLU: expected input of shape (N, ...), got (0, 3)"),
        (Flatten(), np.zeros((0, 1, 2, 2), np.float32), "Flatten: expected input of shape (N, ...)"),
        (Dropout(0.5), [[1.0, 2.0]], "Dropout: expected an array of shape (N, ...), got list"),
    ]
    for layer, x, message in cases:
        with pytest.raises(ShapeError) as info:
            layer.forward(x)
        assert message in str(info.value), (layer, str(info.value))


def test_wrong_dtypes_are_refused():
    with pytest.raises(ShapeError, match=r"Dense: expected float32 input, got float64; convert with x.astype"):
        Dense(4, 3).forward(np.zeros((2, 4)))
    with pytest.raises(ShapeError, match="Conv2D: expected float32 input, got int64"):
        Conv2D(1, 2, 3).forward(np.zeros((2, 1, 5, 5), np.int64))
    with pytest.raises(ShapeError, match="ReLU: expected floating-point input, got int32"):
        ReLU().forward(np.zeros((2, 3), np.int32))
    layer = Dense(4, 3)
    layer.params = {name: p.astype(np.float64) for name, p in layer.params.items()}
    layer.forward(np.zeros((2, 4)))  # float64 parameters take float64 input (gradient checks)


def test_backward_checks_its_gradient():
    layer = Dense(4, 3)
    with pytest.raises(ShapeError, match=r"Dense: backward\(\) before forward\(\)"):
        layer.backward(np.zeros((2, 3), np.float32))
    layer.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ShapeError, match=r"Dense: expected a gradient of shape \(2, 3\).*got \(2, 4\)"):
        layer.backward(np.zeros((2, 4), np.float32))
    pool = MaxPool2D(2)
    pool.forward(np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(ShapeError, match=r"MaxPool2D: expected a gradient of shape \(1, 2, 2, 2\)"):
        pool.backward(np.zeros((1, 2, 4, 4), np.float32))


@pytest.mark.parametrize("make, message", [
    (lambda: Dense(0, 3), "Dense: in_features must be a positive whole number"),
    (lambda: Conv2D(1, 2, 3, pad=-1), "Conv2D: pad must be a whole number >= 0"),
    (lambda: MaxPool2D(2, pad=2), "pad must be a whole number from 0 to size // 2"),
    (lambda: Dropout(1.0), r"Dropout: p must be a number in \[0.0, 1.0\)"),
    (lambda: Dropout("half"), "Dropout: p must be a number"),
    (lambda: BatchNorm(4, momentum=1.5), "BatchNorm: momentum must be a number"),
    (lambda: BatchNorm(4, eps=0), "BatchNorm: eps must be positive"),
    (lambda: Dense(4, 3, init="glorot"), "unknown weight initialisation 'glorot'"),
    (lambda: Sequential([Flatten(), Dense(10, 2)], (1, 3, 3)),
     r"Dense: expected input of shape \(N, 10\), got \(N, 9\)"),
    (lambda: Sequential([Flatten(), Dense(9, 2)], (1, 0, 3)), "input_shape must be"),
    (lambda: Sequential([], (1, 3, 3)), "non-empty list of fastnn layers"),
])
def test_layer_and_model_settings(make, message):
    with pytest.raises((ConfigError, ShapeError), match=message):
        make()


# ---------------------------------------------------------------------- model and trainer
def test_model_inputs(model):
    with pytest.raises(ShapeError, match=r"tiny: expected input of shape \(N, 1, 8, 8\) with N >= 1"):
        model.forward(np.zeros((2, 1, 9, 9), np.float32))
    with pytest.raises(ShapeError, match="expected float32 input, got float64"):
        model.forward(images(2, np.float64))
    with pytest.raises(ShapeError, match="with N >= 1, got"):
        model.predict(images(0))
    with pytest.raises(ShapeError, match="with N >= 1"):
        model.evaluate(images(0), np.zeros(0, np.int64))
    with pytest.raises(ShapeError, match=r"class indices must lie in \[0, 4\), found 0..4"):
        model.evaluate(images(3), np.array([0, 4, 1]))
    with pytest.raises(ShapeError, match="integer class indices"):
        model.evaluate(images(3), np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ShapeError, match=r"expected shape \(3,\), one per image"):
        model.evaluate(images(3), np.array([0, 1]))
    with pytest.raises(ConfigError, match="batch_size must be a positive whole number, not 0"):
        model.predict(images(3), batch_size=0)


def test_trainer_inputs(model):
    adam = optim.make("adam")
    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(ConfigError, match="batch_size must be a positive whole number"):
            Trainer(model, adam, batch_size=bad)
    with pytest.raises(ConfigError, match="eval_batch_size"):
        Trainer(model, adam, eval_batch_size=0)
    with pytest.raises(ConfigError, match="seed must be a whole number >= 0"):
        Trainer(model, adam, seed=-1)
    with pytest.raises(ConfigError, match="checkpoint_every needs a checkpoint_path"):
        Trainer(model, adam, checkpoint_every=5)
    with pytest.raises(ConfigError, match="JSON-able"):
        Trainer(model, adam, settings={"when": object()})
    trainer = Trainer(model, adam, batch_size=4, progress=False)
    with pytest.raises(ShapeError, match=r"training labels: class indices must lie in \[0, 4\), found -1..2"):
        trainer.fit(images(3), np.array([0, -1, 2]))
    with pytest.raises(ShapeError, match="training images: tiny expects"):
        trainer.fit(images(0), np.zeros(0, np.int64))
    with pytest.raises(ShapeError, match="test labels"):
        trainer.fit(images(3), np.array([0, 1, 2]), test=(images(2), np.array([0, 9])))
    with pytest.raises(ConfigError, match="early stopping monitors 'val_loss'"):
        trainer.fit(images(3), np.array([0, 1, 2]), patience=2)
    assert trainer.optimizer.steps == 0  # every check came before any step


@pytest.mark.parametrize("make, message", [
    (lambda: optim.make("adam", lr=0), "learning rate must be a positive number, not 0"),
    (lambda: optim.make("sgd", lr=-0.1), "learning rate must be a positive number"),
    (lambda: optim.make("sgd", lr=float("nan")), "learning rate must be a positive number"),
    (lambda: optim.make("sgd", lr="0.1"), "learning rate must be a positive number"),
    (lambda: optim.make("sgd", weight_decay=-1), "weight_decay must be >= 0"),
    (lambda: optim.make("momentum", momentum=1.0), r"momentum must be a number in \[0, 1\)"),
    (lambda: optim.make("adam", beta2=1.5), "beta2 must be a number"),
    (lambda: optim.make("adam", eps=0), "eps must be a positive number"),
    (lambda: optim.make("rmsprop", alpha=-0.1), "alpha must be a number"),
    (lambda: optim.make("adam", betas=(0.9,)), r"adam: betas must be two numbers \(beta1, beta2\)"),
    (lambda: optim.make("sgd", betas=(0.9, 0.99)), "optimizer 'sgd' has no betas"),
    (lambda: optim.make("lbfgs"), "unknown optimizer 'lbfgs': choose one of sgd, momentum"),
    (lambda: models.build("resnet"), "unknown model 'resnet': choose one of simple-cnn"),
    (lambda: backends.use("bogus"), "unknown backend 'bogus': choose one of numpy, numba, cython, cuda"),
])
def test_names_and_hyperparameters(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_numpy_scalars_are_fine_as_learning_rates():
    assert optim.make("sgd", lr=np.float32(0.5)).lr == 0.5


def test_environment_settings(monkeypatch):
    monkeypatch.setenv("FASTNN_BACKEND", "bogus")
    with pytest.raises(ConfigError, match="FASTNN_BACKEND: unknown backend 'bogus'"):
        config.backend_name()
    monkeypatch.setenv("FASTNN_NUM_THREADS", "0")
    with pytest.raises(ConfigError, match="FASTNN_NUM_THREADS='0'"):
        config.num_threads()
    monkeypatch.setenv("FASTNN_TEST_KILL", "soon")
    with pytest.raises(ConfigError, match="FASTNN_TEST_KILL='soon'"):
        config.test_kill_point()


# ---------------------------------------------------------------------- data files
def test_idx_headers():
    header = bytes([0, 0, 8, 2])
    with pytest.raises(DataError, match="wrong magic number"):
        parse_idx(b"\x01\x02\x08\x01" + b"\0" * 8, "x")
    with pytest.raises(DataError, match="type code 0x0d"):
        parse_idx(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0" * 4, "x")
    with pytest.raises(DataError, match="negative dimension"):
        parse_idx(header + (-2).to_bytes(4, "big", signed=True) + (-3).to_bytes(4, "big", signed=True) + b"\0" * 6)
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(header + b"\0\0\0\1")
    with pytest.raises(DataError, match="cannot read it"):
        read_idx("/nonexistent/file-idx1-ubyte")


def test_every_byte_string_is_an_array_or_a_data_error():
    rng = np.random.default_rng(0)
    good = bytes([0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 2]) + bytes(range(6))
    for _ in range(2000):
        content = bytearray(good[:rng.integers(0, len(good) + 1)])
        for i in rng.integers(0, max(1, len(content)), rng.integers(0, 3)):
            if content:
                content[i] = int(rng.integers(0, 256))
        try:
            array = parse_idx(bytes(content))
        except DataError:
            continue
        assert array.dtype == np.uint8 and array.size == len(content) - 4 - 4 * content[3]


def copy_dataset(src, dst, change=None):
    dst.mkdir(parents=True)
    for name in FILES:
        shutil.copy(src / f"{name}.gz", dst / f"{name}.gz")
    if change:
        change(dst)
    return dst


def truncate_labels(d):
    p = d / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-100]))


def wrong_magic(d):
    p = d / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(p.read_bytes()))
    content[2] = 0x09
    p.write_bytes(gzip.compress(bytes(content)))


def not_gzip(d):
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage")


@pytest.mark.parametrize("change, message", [
    (truncate_labels, "checksum mismatch"), (wrong_magic, "checksum mismatch"),
    (not_gzip, "gzip stream is truncated or corrupt")])
def test_damaged_data_directory(tmp_path, mnist_dir, change, message):
    data = copy_dataset(mnist_dir, tmp_path / "data", change)
    with pytest.raises(DataError, match=message):
        load_mnist("mnist", data, download_missing=False, progress=False)


# ---------------------------------------------------------------------- the command line
OUTPUTS = {"--save": "model.npz", "--checkpoint": "ck.npz", "--metrics": "metrics.json"}


@pytest.fixture
def outputs(tmp_path):
    """Existing output files, and a check that a failed run left every byte of them as it was."""
    for name in OUTPUTS.values():
        (tmp_path / name).write_bytes(f"precious {name}".encode())
    yield [arg for flag, name in OUTPUTS.items() for arg in (flag, str(tmp_path / name))]
    for name in OUTPUTS.values():
        assert (tmp_path / name).read_bytes() == f"precious {name}".encode(), name


def run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


TRAIN = ["train", "--model", "mlp", "--limit", "200", "--epochs", "1", "--backend", "numpy", "--no-progress"]


@pytest.mark.parametrize("change, message", [
    (truncate_labels, "checksum mismatch"), (not_gzip, "gzip stream"), (wrong_magic, "checksum mismatch")])
def test_cli_refuses_a_damaged_data_directory(tmp_path, mnist_dir, outputs, capsys, monkeypatch, change, message):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    data = copy_dataset(mnist_dir, tmp_path / "data", change)
    code, err = run_cli(TRAIN + ["--data", str(data)] + outputs, capsys)
    assert code == 1 and err.startswith("fastnn train: error: ") and message in err


@pytest.mark.parametrize("extra, message", [
    (["--checkpoint-every", "5"], "--checkpoint-every needs a file to write to"),
    (["--patience", "2"], "--patience needs a validation set"),
    (["--validation", "200"], "leaves no training images"),
    (["--resume", "missing.npz"], "no such file"),
    (["--save", "."], "is a directory"),
    (["--save", "same.npz", "--checkpoint", "same.npz"], "must name different files"),
    (["--metrics", "model.npz/metrics.json"], "cannot write into"),
])
def test_cli_refuses_bad_combinations_before_training(tmp_path, mnist_dir, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.npz").write_bytes(b"precious")
    code, err = run_cli(TRAIN + ["--data", str(mnist_dir)] + extra, capsys)
    assert code == 1 and message in err and err.count("\n") == 1, err
    assert (tmp_path / "model.npz").read_bytes() == b"precious"


def test_cli_resume_from_a_damaged_checkpoint_changes_nothing(tmp_path, mnist_dir, capsys):
    (tmp_path / "ck.npz").write_bytes(b"PK\x03\x04 not really")
    code, err = run_cli(TRAIN + ["--data", str(mnist_dir), "--resume", str(tmp_path / "ck.npz")], capsys)
    assert code == 1 and "not a .npz file" in err
    assert (tmp_path / "ck.npz").read_bytes() == b"PK\x03\x04 not really"


@pytest.mark.parametrize("argv, message", [
    (TRAIN + ["--model", "resnet"], "invalid choice: 'resnet'"),
    (TRAIN + ["--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
    (TRAIN + ["--backend", "bogus"], "invalid choice: 'bogus'"),
    (TRAIN + ["--batch-size", "0"], "must be 1 or more"),
    (TRAIN + ["--lr", "0"], "must be a positive number"),
    (TRAIN + ["--lr=-1e-3"], "must be a positive number"),
    (TRAIN + ["--checkpoint-every", "0"], "must be 1 or more"),
])
def test_cli_usage_errors_touch_nothing(argv, message, outputs, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv + outputs)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_bogus_backend_in_the_environment_is_one_line_and_touches_nothing(tmp_path, mnist_dir, outputs):
    env = dict(os.environ, FASTNN_BACKEND="bogus", PYTHONPATH=str(ROOT), FASTNN_DATA=str(mnist_dir))
    argv = [a for a in TRAIN if a not in ("--backend", "numpy")]
    result = subprocess.run([sys.executable, "-m", "fastnn", *argv, *outputs], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "FASTNN_BACKEND: unknown backend 'bogus'" in result.stderr


def test_cli_with_a_file_missing_and_no_mirror_reachable(tmp_path, mnist_dir, outputs, capsys, monkeypatch):
    from fastnn.data import DATASETS
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    monkeypatch.setitem(DATASETS["mnist"], "mirrors", ("http://127.0.0.1:9/",))  # nothing listens there
    data = copy_dataset(mnist_dir, tmp_path / "data", lambda d: (d / f"{FILES[1]}.gz").unlink())
    code, err = run_cli(TRAIN + ["--data", str(data)] + outputs, capsys)
    assert code == 1 and err.startswith("fastnn train: error: mnist not found and the download failed")
    assert str(data) in err and "http://127.0.0.1:9/" in err and "Traceback" not in err
