"""Every bad input to `fastnn predict | export | summary | evaluate | train | bench` ends in one line
that names the problem and a non-zero exit, never a traceback; and a file whose header declares more
than it holds is refused before anything of the declared size is allocated.

Each case runs `python -m fastnn ...` in its own process (the numpy backend, one thread): a missing
file, a directory for a file, a truncated, corrupt, empty or forged file, a .npz that is not a model,
arguments swapped, an output path that cannot be written, bad option values and bad environment
variables. Exit 1 is an error fastnn names (stderr is that one line); exit 2 a usage error
(argparse's usage, then one error line).
"""
import functools
import gzip
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
HAVE_ONNX = importlib.util.find_spec("onnx") is not None
NO_ONNX = "exporting to ONNX needs the onnx package"  # what every export that gets past argparse says without it
TRAIN = ["train", "--model", "mlp", "--epochs", "1", "--limit", "100", "--no-progress"]
BENCH = ["bench", "--model", "mlp", "--backends", "numpy", "--no-torch", "--images", "200", "--repeats", "1"]


def hostile_npy(path, shape=(100_000, 100_000)):
    """A 3 KB .npy whose header declares ``shape`` float32 (37 GiB for the default)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(bytes(3000))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A directory of good and bad inputs, the working directory of every case."""
    from fastnn import models, save_model
    from fastnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    from fastnn.model import Sequential
    d = tmp_path_factory.mktemp("inputs")
    save_model(d / "model.npz", models.build("mlp", seed=0))
    save_model(d / "small.npz", Sequential([Conv2D(1, 3, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(75, 10)],
                                           (1, 12, 12)))  # a model for 12x12 images
    save_model(d / "five.npz", Sequential([Flatten(), Dense(784, 5)], (1, 28, 28)))  # 5 classes, not 10
    good = (d / "model.npz").read_bytes()
    (d / "truncated.npz").write_bytes(good[:len(good) // 2])
    corrupt = bytearray(good)
    corrupt[len(good) // 3] ^= 0xFF  # inside the first Dense's weights: the zip CRC no longer matches
    (d / "corrupt.npz").write_bytes(bytes(corrupt))
    (d / "empty.npz").write_bytes(b"")
    np.savez(d / "weights.npz", w=np.zeros(3))  # a .npz, but not a fastnn file
    page = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(page).line([(15, 10), (45, 10), (28, 50)], fill=0, width=6)  # a 7
    page.save(d / "digit.png")
    (d / "notes.txt").write_text("not a picture")
    (d / "notes.png").write_text("not a picture")
    hostile_npy(d / "hostile.npy")
    (d / "empty.npy").write_bytes(b"")
    np.save(d / "pickle.npy", np.array([{}], dtype=object), allow_pickle=True)
    (d / "adir").mkdir()
    return d


# (name, argv, exit code, what the error line must say, extra environment)
CASES = [
    # predict: the model file
    ("predict: missing model", ["predict", "absent.npz", "digit.png"], 1, "absent.npz: no such file"),
    ("predict: directory as model", ["predict", "adir", "digit.png"], 1, "adir: is a directory"),
    ("predict: truncated model", ["predict", "truncated.npz", "digit.png"], 1, "truncated.npz: not a .npz file"),
    ("predict: corrupt model", ["predict", "corrupt.npz", "digit.png"], 1, "corrupt.npz: not a readable .npz file"),
    ("predict: empty model", ["predict", "empty.npz", "digit.png"], 1, "empty.npz: not a .npz file"),
    ("predict: npz not a model", ["predict", "weights.npz", "digit.png"], 1, "weights.npz: no __meta__ entry"),
    ("predict: arguments swapped", ["predict", "digit.png", "model.npz"], 1, "digit.png: not a .npz file"),
    ("predict: model of other images", ["predict", "small.npz", "digit.png"], 1,
     "small.npz: its model takes (1, 12, 12) images"),
    # predict: the images
    ("predict: missing image", ["predict", "model.npz", "absent.png"], 1, "absent.png: no such file"),
    ("predict: hostile npy", ["predict", "model.npz", "hostile.npy"], 1,
     "hostile.npy: its .npy header declares a (100000, 100000) float32 array (40,000,000,000 bytes) but holds "
     "3,000 bytes"),
    ("predict: empty npy", ["predict", "model.npz", "empty.npy"], 1, "empty.npy: cannot read it as a .npy array"),
    ("predict: pickled npy", ["predict", "model.npz", "pickle.npy"], 1,
     "pickle.npy: cannot read it as a .npy array: Object arrays cannot be loaded"),
    ("predict: text named png", ["predict", "model.npz", "notes.png"], 1, "notes.png: not an image Pillow can read"),
    ("predict: wrong suffix", ["predict", "model.npz", "notes.txt"], 1, "notes.txt: not an image Pillow can read"),
    ("predict: empty directory", ["predict", "model.npz", "adir"], 1, "adir: a directory with no png"),
    # predict: options and environment
    ("predict: no image", ["predict", "model.npz"], 2, "the following arguments are required: PATH"),
    ("predict: --top 0", ["predict", "model.npz", "digit.png", "--top", "0"], 2, "argument --top: must be 1 or more"),
    ("predict: --top x", ["predict", "model.npz", "digit.png", "--top", "x"], 2,
     "argument --top: expected a whole number"),
    ("predict: --threads 0", ["predict", "model.npz", "digit.png", "--threads", "0"], 2,
     "argument --threads: must be 1 or more"),
    ("predict: --backend tpu", ["predict", "model.npz", "digit.png", "--backend", "tpu"], 2,
     "argument --backend: invalid choice: 'tpu'"),
    ("predict: FASTNN_NUM_THREADS=abc", ["predict", "model.npz", "digit.png"], 1, "FASTNN_NUM_THREADS='abc'",
     {"FASTNN_NUM_THREADS": "abc"}),
    ("predict: FASTNN_BACKEND=bogus", ["predict", "model.npz", "digit.png"], 1,
     "FASTNN_BACKEND: unknown backend 'bogus'", {"FASTNN_BACKEND": "bogus"}),
    # summary
    ("summary: missing model", ["summary", "absent.npz"], 1, "absent.npz: no such file"),
    ("summary: directory as model", ["summary", "adir"], 1, "adir: is a directory"),
    ("summary: truncated model", ["summary", "truncated.npz"], 1, "truncated.npz: not a .npz file"),
    ("summary: corrupt model", ["summary", "corrupt.npz"], 1, "corrupt.npz: not a readable .npz file"),
    ("summary: npy as model", ["summary", "hostile.npy"], 1, "hostile.npy: not a .npz file"),
    ("summary: npz not a model", ["summary", "weights.npz"], 1, "weights.npz: no __meta__ entry"),
    ("summary: nothing named", ["summary"], 2, "one of the arguments MODEL.npz --model is required"),
    ("summary: unknown model", ["summary", "--model", "resnet"], 2, "argument --model: invalid choice: 'resnet'"),
    ("summary: file and name", ["summary", "model.npz", "--model", "mlp"], 2, "not allowed with argument"),
    ("summary: FASTNN_FUSION=maybe", ["summary", "model.npz"], 1, "FASTNN_FUSION='maybe'",
     {"FASTNN_FUSION": "maybe"}),
    # export
    ("export: missing model", ["export", "absent.npz", "out.onnx"], 1, "absent.npz: no such file"),
    ("export: truncated model", ["export", "truncated.npz", "out.onnx"], 1, "truncated.npz: not a .npz file"),
    ("export: npz not a model", ["export", "weights.npz", "out.onnx"], 1, "weights.npz: no __meta__ entry"),
    ("export: output a directory", ["export", "model.npz", "adir"], 1, "adir: is a directory"),
    ("export: output under a file", ["export", "model.npz", "model.npz/out.onnx"], 1, "cannot write into"),
    ("export: output suffix .npz", ["export", "model.npz", "out.npz"], 1, "give a name ending in .onnx"),
    ("export: output is the model", ["export", "model.npz", "model.npz"], 1, "would overwrite the model file"),
    ("export: opset too old", ["export", "model.npz", "out.onnx", "--opset", "3"], 1,
     "opset must be a whole number from 17"),
    ("export: opset not a number", ["export", "model.npz", "out.onnx", "--opset", "x"], 2,
     "argument --opset: expected a whole number"),
    ("export: no output", ["export", "model.npz"], 2, "the following arguments are required: OUT.onnx"),
    # evaluate (these fail before any data is read)
    ("evaluate: missing model", ["evaluate", "absent.npz"], 1, "absent.npz: no such file"),
    ("evaluate: corrupt model", ["evaluate", "corrupt.npz"], 1, "corrupt.npz: not a readable .npz file"),
    ("evaluate: directory as model", ["evaluate", "adir"], 1, "adir: is a directory"),
    ("evaluate: no data directory", ["evaluate", "model.npz", "--data", "no-such-dir"], 2,
     "argument --data: no such directory: 'no-such-dir'"),
    ("evaluate: data is a file", ["evaluate", "model.npz", "--data", "model.npz"], 2,
     "argument --data: 'model.npz' is a file, not a directory"),
    ("evaluate: unknown dataset", ["evaluate", "model.npz", "--dataset", "cifar"], 2,
     "argument --dataset: invalid choice: 'cifar'"),
    # train (each fails before training)
    ("train: no data directory", TRAIN + ["--data", "no-such-dir"], 2, "argument --data: no such directory"),
    ("train: epochs 0", TRAIN + ["--epochs", "0"], 2, "argument --epochs: must be 1 or more"),
    ("train: lr nan", TRAIN + ["--lr", "nan"], 2, "argument --lr: must be a positive number"),
    ("train: betas", TRAIN + ["--betas", "1,2"], 2, "argument --betas: must be in [0, 1)"),
    ("train: augment", TRAIN + ["--augment", "x"], 2, "argument --augment: expected two numbers SHIFT,DEGREES"),
    ("train: target 150%", TRAIN + ["--target-accuracy", "150%"], 2, "an accuracy is at most 1"),
    ("train: resume missing", TRAIN + ["--resume", "absent.npz"], 1, "absent.npz: no such file"),
    ("train: resume a model file", TRAIN + ["--resume", "model.npz"], 1, "a model file cannot resume training"),
    ("train: resume truncated", TRAIN + ["--resume", "truncated.npz"], 1, "truncated.npz: not a .npz file"),
    ("train: resume a directory", TRAIN + ["--resume", "adir"], 1, ("--resume ", "adir: is a directory")),
    ("train: save a directory", TRAIN + ["--save", "adir"], 1, "adir: is a directory"),
    ("train: save under a file", TRAIN + ["--save", "model.npz/new.npz"], 1, "cannot write into"),
    ("train: save and metrics one file", TRAIN + ["--save", "a.npz", "--metrics", "a.npz"], 1,
     "must name different files"),
    ("train: checkpoint-every alone", TRAIN + ["--checkpoint-every", "5"], 1,
     "--checkpoint-every needs a file to write to"),
    ("train: patience alone", TRAIN + ["--patience", "2"], 1, "--patience needs a validation set"),
    ("train: FASTNN_NUM_THREADS=0", TRAIN, 1, "FASTNN_NUM_THREADS='0'", {"FASTNN_NUM_THREADS": "0"}),
    # bench (tiny settings)
    ("bench: images 0", BENCH + ["--images", "0"], 2, "argument --images: must be 1 or more"),
    ("bench: unknown model", BENCH + ["--model", "resnet"], 2, "argument --model: invalid choice: 'resnet'"),
    ("bench: unknown backend", BENCH + ["--backends", "numpy,bogus"], 1, "unknown backend 'bogus'"),
    ("bench: no data directory", BENCH + ["--data", "no-such-dir"], 2, "argument --data: no such directory"),
    ("bench: json a directory", BENCH + ["--json", "adir"], 1, "adir: is a directory"),
    ("bench: json under a file", BENCH + ["--json", "model.npz/report.json"], 1, "cannot write into"),
    ("bench: json and plot one file", BENCH + ["--json", "r.json", "--plot", "r.json"], 1,
     "must name different files"),
    ("bench: a learning rate that diverges", BENCH + ["--lr", "1e30"], 1, "the loss became nan"),
]


def run_fastnn(argv, cwd, env=None, prefix=()):
    env = {**os.environ, "FASTNN_BACKEND": "numpy", "FASTNN_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **(env or {})}
    return subprocess.run([sys.executable, *prefix, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def check_one_line_error(result, command, code, message):
    """Exit ``code``; no traceback; one error line, from ``fastnn COMMAND``, that says ``message`` (or
    each of a tuple of them); exit 1: that line is all of stderr; exit 2: argparse's usage comes first."""
    err = result.stderr
    assert "Traceback" not in err, err
    assert result.returncode == code, f"exit {result.returncode}, expected {code}:\n{err}"
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"fastnn {command}: error: "), err
    for part in (message,) if isinstance(message, str) else message:
        assert part in errors[0], f"{part!r} not in {errors[0]!r}"
    if code == 1:
        assert err.strip() == errors[0], f"more than one line:\n{err}"
    else:
        assert err.startswith(f"usage: fastnn {command}"), err


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_a_bad_input_is_one_line_and_a_non_zero_exit(files, tmp_path, case):
    name, argv, code, message, *extra = case
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), **(extra[0] if extra else {})}  # no data set in the cache
    if argv[0] == "export" and code == 1 and not HAVE_ONNX:
        message = NO_ONNX
    result = run_fastnn(["-m", "fastnn", *argv], files, env)
    check_one_line_error(result, argv[0], code, message)


def test_the_cases_cover_every_command():
    assert {case[1][0] for case in CASES} == {"predict", "export", "summary", "evaluate", "train", "bench"}


# ---------------------------------------------------------------------- with the real data set
def mnist_copy(mnist_dir, directory, change=None):
    """A data directory of links to the real MNIST files, one of them replaced by ``change(path)``."""
    from fastnn.data import FILES
    directory.mkdir()
    for name in FILES:
        (directory / f"{name}.gz").symlink_to(mnist_dir / f"{name}.gz")
    if change:
        target = directory / f"{FILES[3]}.gz"  # the test labels
        target.unlink()
        change(target)
    return directory


@functools.lru_cache(maxsize=1)
def zeros_member(size=64 << 20):
    """One gzip member of ``size`` zero bytes: about 64 KB."""
    return gzip.compress(bytes(size), 9)


def gzip_bomb(path, header=bytes([0, 0, 8, 1]) + (10000).to_bytes(4, "big"), members=48):
    """A 3 MB gzip file that inflates to 3 GiB (48 gzip members of 64 MiB of zeros each) after an IDX
    ``header`` (default: MNIST's test labels')."""
    path.write_bytes(gzip.compress(header, 1) + zeros_member() * members)


def truncated_labels(path, mnist_dir):
    content = gzip.decompress((mnist_dir / path.name).read_bytes())
    path.write_bytes(gzip.compress(content[:-100]))


@pytest.mark.parametrize("case", ["model of other images", "model of five classes", "labels truncated"])
def test_evaluate_refuses_what_the_data_set_shows_is_wrong(files, tmp_path, mnist_dir, case):
    model, data, message = {
        "model of other images": ("small.npz", mnist_dir, "small.npz: its model takes (1, 12, 12) images, but "
                                  "mnist's test set gives it (1, 28, 28)"),
        "model of five classes": ("five.npz", mnist_dir, "five.npz: its model outputs 5 class scores, but "
                                  "mnist's test set has labels 0-9"),
        "labels truncated": ("model.npz", mnist_copy(mnist_dir, tmp_path / "data",
                                                     lambda p: truncated_labels(p, mnist_dir)),
                             "t10k-labels-idx1-ubyte.gz: checksum mismatch"),
    }[case]
    result = run_fastnn(["-m", "fastnn", "evaluate", model, "--data", str(data)], files,
                        {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    check_one_line_error(result, "evaluate", 1, message)


# ---------------------------------------------------------------------- headers that declare more than the file holds
# RLIMIT_AS makes the defect visible without harm: code that allocates what a header declares gets a
# MemoryError (a traceback) at 2 GiB of address space instead of taking 37 GiB of a machine that
# overcommits (where it is OOM-killed) or swapping.
LIMIT_AS = "import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
LIMITED = ("-c", LIMIT_AS + "import runpy\nrunpy.run_module('fastnn', run_name='__main__', alter_sys=True)")


def test_a_hostile_npy_is_refused_before_it_allocates(files):
    assert (files / "hostile.npy").stat().st_size < 3200
    result = run_fastnn(["predict", "model.npz", "hostile.npy"], files, prefix=LIMITED)
    check_one_line_error(result, "predict", 1, "hostile.npy: its .npy header declares a (100000, 100000) float32 "
                                               "array (40,000,000,000 bytes) but holds 3,000 bytes")
    ok = run_fastnn(["predict", "model.npz", "digit.png"], files, prefix=LIMITED)  # the limit leaves room to work
    assert ok.returncode == 0 and ok.stdout.startswith("digit.png: "), ok.stderr


def test_a_gzip_bomb_in_the_data_directory_is_not_inflated(files, tmp_path, mnist_dir):
    data = mnist_copy(mnist_dir, tmp_path / "data", gzip_bomb)
    assert (data / "t10k-labels-idx1-ubyte.gz").stat().st_size < 4 << 20
    result = run_fastnn(["evaluate", "model.npz", "--data", str(data)], files, {"XDG_CACHE_HOME": str(tmp_path)},
                        prefix=LIMITED)
    check_one_line_error(result, "evaluate", 1, "t10k-labels-idx1-ubyte.gz: checksum mismatch")


def test_read_idx_refuses_a_header_no_gzip_file_of_its_size_can_hold(tmp_path):
    path = tmp_path / "forged-idx3-ubyte.gz"  # declares 10^12 bytes of images, holds 3 GiB in 3 MB
    gzip_bomb(path, bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (1_000_000, 1000, 1000)))
    script = LIMIT_AS + textwrap.dedent("""
        from fastnn.data import read_idx
        from fastnn.errors import DataError
        try:
            read_idx(sys.argv[1])
        except DataError as e:
            print(e)
    """)
    result = run_fastnn(["-c", script, str(path)], tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert ("declares (1000000, 1000, 1000) (1,000,000,000,016 bytes), more than a gzip file of "
            f"{path.stat().st_size:,} bytes can hold") in result.stdout
