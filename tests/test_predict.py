"""Your own images: fastnn.load_digit (MNIST's preparation), model.predict_proba, `fastnn predict`
and examples/predict_own_digit.py, on real MNIST digits written out as image files. The tests
marked slow share one simple-cnn trained here for one epoch on 30,000 images (about 5 s)."""
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastnn
from fastnn.cli import main
from fastnn.digits import centre_of_mass, find_images, load_digit
from fastnn.errors import DataError
from fastnn.threads import current_threads

ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def load(directory):
    return fastnn.load_mnist("mnist", directory, download_missing=False, progress=False)


@pytest.fixture
def mnist(mnist_dir):
    return load(mnist_dir)


@functools.lru_cache(maxsize=1)
def trained_model_file(directory, path):
    """simple-cnn trained for one epoch on 30,000 MNIST images (a one-cycle schedule peaking at 3e-3):
    about 98% on the test set, in about 4 s on one thread. Trained once per session, saved at ``path``."""
    x_train, y_train, _, _ = load(directory)
    fastnn.backends.get()
    previous = current_threads()
    fastnn.set_threads(1)  # a shared 2-core machine: one thread waits for no time slices
    try:
        model = fastnn.build_model("simple-cnn", seed=0)
        trainer = fastnn.Trainer(model, fastnn.make_optimizer("adam", lr=0.003), batch_size=100, seed=0,
                                 progress=False, schedule=fastnn.schedules.OneCycle())
        trainer.fit(x_train[:30000], y_train[:30000], epochs=1)
    finally:
        fastnn.set_threads(previous)
    fastnn.save_model(path, model, metadata={"dataset": "mnist"})
    return path


@pytest.fixture
def model_file(mnist_dir, tmp_path_factory):
    """The file of trained_model_file's model (mnist_dir: skipped without the real MNIST files, failed under CI)."""
    return trained_model_file(mnist_dir, tmp_path_factory.getbasetemp() / "predict-simple-cnn.npz")


def correlation(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def best_correlation(a, b):
    """The correlation of ``a`` and ``b`` at the best whole-pixel shift of up to 1 pixel: MNIST centres by
    the centre of mass rounded to a whole pixel, and a centre near x.5 may round either way."""
    return max(correlation(np.roll(a, (dy, dx), axis=(0, 1)), b) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def blurred(image, sigma=1.0):
    from scipy import ndimage
    return ndimage.gaussian_filter(image.astype(np.float64), sigma)


def uint8(image):
    """A (1, 28, 28) or (28, 28) MNIST image as 0-255 grey levels."""
    return np.round(np.asarray(image).reshape(28, 28) * 255).astype(np.uint8)


def paste(digit, canvas=(120, 90), at=(10, 50), paper=0):
    """``digit`` (uint8, white on black) pasted on a bigger black canvas, top-left at ``at``."""
    page = np.full(canvas, paper, np.uint8)
    page[at[0]:at[0] + digit.shape[0], at[1]:at[1] + digit.shape[1]] = digit
    return page


def enlarge(digit, factor, resample=None):
    if resample is None:  # whole pixels (np.kron): the digit's exact shape at a larger size
        return np.kron(digit, np.ones((factor, factor), np.uint8))
    size = round(28 * factor)
    return np.asarray(Image.fromarray(digit).resize((size, size), resample))


# ---------------------------------------------------------------------- load_digit
def test_an_mnist_image_passes_through_unchanged(mnist):
    _, _, x_test, _ = mnist
    for image in x_test[:200]:
        digit = load_digit(image)
        assert digit.shape == (1, 28, 28) and digit.dtype == np.float32
        assert 0 <= digit.min() and digit.max() == 1
        assert np.abs(digit - image).mean() < 0.01
        assert correlation(digit, image) > 0.99
        assert np.allclose(centre_of_mass(digit[0]), centre_of_mass(image[0]), atol=1)
        assert np.abs(np.array(centre_of_mass(digit[0])) - 14).max() <= 0.5


VARIANTS = {
    # name: (u8 MNIST digit -> an image of it, compare after a blur: changed by fractions of a pixel, as a "1"
    # 2.5x as big, whose 2-pixel stroke then falls on other pixel boundaries)
    "off-centre on a bigger canvas": (lambda d: paste(d, (120, 90), (10, 55)), False),
    "scaled 2x, off-centre": (lambda d: paste(enlarge(d, 2), (90, 110), (30, 3)), False),
    "scaled 3x": (lambda d: paste(enlarge(d, 3), (150, 130), (5, 40)), False),
    "scaled 2.5x, bilinear": (lambda d: paste(enlarge(d, 2.5, Image.Resampling.BILINEAR), (110, 100), (8, 20)), True),
    "dark ink on white paper": (lambda d: 255 - paste(d), False),
    "white ink on grey paper": (lambda d: np.round(128 + paste(d) / 255 * 127).astype(np.uint8), False),
    "dark ink on grey paper": (lambda d: np.round(128 - paste(d) / 255 * 128).astype(np.uint8), False),
    "dark ink on noisy paper": (lambda d: np.clip(225 - 0.8 * paste(d) + np.random.default_rng(0).normal(
        0, 8, paste(d).shape), 0, 255).astype(np.uint8), True),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_digit_moved_scaled_inverted_or_on_grey_comes_back_centred(mnist, variant):
    _, _, x_test, _ = mnist
    make, blur = VARIANTS[variant]
    for image in x_test[:60]:
        digit = load_digit(make(uint8(image)))[0]
        assert np.abs(np.array(centre_of_mass(digit)) - 14).max() <= 0.5
        if blur:
            assert best_correlation(blurred(digit), blurred(image[0])) > 0.9
        else:
            assert best_correlation(digit, image[0]) > 0.97


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".gif", ".npy"])
def test_every_file_format_reads_as_the_digit(mnist, tmp_path, suffix):
    _, _, x_test, _ = mnist
    image = x_test[0, 0]
    page = 255 - paste(uint8(image))  # dark on light
    path = tmp_path / f"digit{suffix}"
    if suffix == ".npy":
        np.save(path, page)
    elif suffix == ".gif":  # an animated GIF: its first frame is the digit, the second another one
        other = Image.fromarray(255 - paste(uint8(x_test[1, 0])))
        Image.fromarray(page).save(path, save_all=True, append_images=[other], duration=100)
    else:
        Image.fromarray(page).convert("RGB").save(path)  # colour files: converted to grey
    digit = load_digit(path)[0]
    assert best_correlation(digit, image) > (0.95 if suffix == ".jpg" else 0.99)


def test_transparent_png_and_arrays_of_other_shapes_and_types(mnist, tmp_path):
    _, _, x_test, _ = mnist
    image = x_test[0, 0]
    ink = paste(uint8(image))
    rgba = np.zeros(ink.shape + (4,), np.uint8)  # black ink whose opacity is the digit, on nothing
    rgba[..., 3] = ink
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    for source in (tmp_path / "transparent.png", str(tmp_path / "transparent.png"), ink[None], ink / 255.0,
                   ink.astype(np.float32), Image.fromarray(255 - ink)):
        assert best_correlation(load_digit(source)[0], image) > 0.99


def test_an_empty_image_holds_no_ink(tmp_path):
    Image.new("L", (50, 40), 255).save(tmp_path / "blank.png")
    with pytest.raises(DataError, match=r"blank\.png: holds no ink"):
        load_digit(tmp_path / "blank.png")
    for array in (np.zeros((28, 28)), np.full((30, 20), 0.5), np.full((1, 28, 28), 200, np.uint8)):
        with pytest.raises(DataError, match="the array: holds no ink"):
            load_digit(array)
    faint = np.full((40, 40), 200, np.uint8)
    faint[10:20, 10:20] = 190  # 10 grey levels of 255: paper texture, not ink
    with pytest.raises(DataError, match="holds no ink"):
        load_digit(faint)


def test_an_unreadable_file_says_which_and_why(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(DataError, match=r"notes\.png: not an image Pillow can read"):
        load_digit(tmp_path / "notes.png")
    with pytest.raises(DataError, match=r"missing\.png: no such file"):
        load_digit(tmp_path / "missing.png")
    Image.new("L", (60, 60), 0).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    with pytest.raises(DataError, match=r"cut\.png: cannot read the image"):
        load_digit(tmp_path / "cut.png")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"bad\.npy: cannot read it as a \.npy array"):
        load_digit(tmp_path / "bad.npy")
    with pytest.raises(DataError, match=r"expected a 2-D image or \(1, H, W\)"):
        load_digit(np.zeros((2, 28, 28)))
    with pytest.raises(DataError, match="NaN or infinite"):
        load_digit(np.full((28, 28), np.nan))


def test_find_images_expands_directories_in_order(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.npy", "notes.txt", "d.gif", "e.bmp", "f.jpeg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "empty").mkdir()
    found = find_images([tmp_path, tmp_path / "notes.txt", tmp_path / "empty"])
    assert [p.name for p in found] == ["a.jpg", "b.PNG", "c.npy", "d.gif", "e.bmp", "f.jpeg", "notes.txt", "empty"]
    with pytest.raises(DataError, match="empty: a directory with no png, jpg"):
        load_digit(tmp_path / "empty")


# ---------------------------------------------------------------------- predict_proba and `fastnn predict`
def softmax64(logits):
    """The softmax of float32 logits, computed in float64: the reference."""
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.slow
def test_predict_proba_is_the_softmax_in_batches(mnist, model_file):
    _, _, x_test, _ = mnist
    model, _ = fastnn.load_model(model_file)
    model.to_backend()
    K = fastnn.backends.get()
    x = x_test[:250]
    p = model.predict_proba(x, batch_size=100)
    assert p.shape == (250, 10) and p.dtype == np.float32
    logits = np.concatenate([K.to_host(model.forward(K.to_device(x[i:i + 100]), train=False))
                             for i in range(0, 250, 100)])  # the batches predict_proba ran
    # float32 rounding: exp(z - max) is off by about eps * |z - max| relative, the sum and the division by a
    # few eps more; a probability below float32's smallest normal number keeps only an absolute precision
    eps, spread = np.finfo(np.float32).eps, float((logits.max(axis=1) - logits.min(axis=1)).max())
    np.testing.assert_allclose(p, softmax64(logits), rtol=8 * eps * (1 + spread), atol=np.finfo(np.float32).tiny)
    assert np.array_equal(p.argmax(axis=1), model.predict(x))
    for batch_size in (1, 7, 250, 1000):  # the same images in other batches: the same probabilities
        np.testing.assert_allclose(model.predict_proba(x, batch_size=batch_size), p, rtol=1e-4, atol=1e-6,
                                   err_msg=f"batch_size={batch_size}")


def write_pngs(directory, images):
    """The images as 8-bit PNG files: the even ones dark on light paper, the odd ones white on black as MNIST."""
    directory.mkdir(exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = directory / f"{i:03d}.png"
        Image.fromarray(255 - uint8(image) if i % 2 == 0 else uint8(image)).save(path)
        paths.append(path)
    return paths


@pytest.mark.slow
def test_predict_reads_200_mnist_pngs_at_97_percent(mnist, model_file, tmp_path, capsys):
    _, _, x_test, y_test = mnist
    write_pngs(tmp_path / "digits", x_test[:200])
    assert main(["predict", str(model_file), str(tmp_path / "digits"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [Path(r["path"]).name for r in out] == [f"{i:03d}.png" for i in range(200)]
    labels = np.array([r["label"] for r in out])
    accuracy = (labels == y_test[:200]).mean()
    print(f"fastnn predict on 200 MNIST test PNGs: {100 * accuracy:.1f}%")
    assert accuracy >= 0.97
    for r in out:
        assert set(r) == {"path", "label", "probabilities"} and len(r["probabilities"]) == 10
        assert abs(sum(r["probabilities"]) - 1) < 1e-4 and r["label"] == int(np.argmax(r["probabilities"]))


@pytest.mark.slow
def test_predict_prints_a_line_per_file_and_the_top_k(mnist, model_file, tmp_path, capsys):
    _, _, x_test, y_test = mnist
    paths = write_pngs(tmp_path, x_test[:3])
    assert main(["predict", str(model_file), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line, path, label in zip(lines, paths, y_test[:3]):
        assert line.startswith(f"{path}: {label} (") and line.endswith("%)") and line.count("(") == 1
    assert main(["predict", str(model_file), str(paths[0]), "--top", "3"]) == 0
    line = capsys.readouterr().out.strip()
    best = line.split(": ", 1)[1].split(", ")
    assert len(best) == 3 and best[0].startswith(f"{y_test[0]} (")
    percents = [float(item.split("(")[1].rstrip("%)")) for item in best]
    assert percents == sorted(percents, reverse=True)
    assert main(["predict", str(model_file), str(paths[0]), "--top", "20"]) == 0  # at most the 10 there are
    assert len(capsys.readouterr().out.split(", ")) == 10


@pytest.mark.slow
def test_a_bad_file_is_reported_and_the_others_still_predicted(mnist, model_file, tmp_path, capsys):
    _, _, x_test, y_test = mnist
    good = write_pngs(tmp_path, x_test[:2])
    Image.new("L", (30, 30), 255).save(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    argv = ["predict", str(model_file), str(good[0]), str(tmp_path / "blank.png"), str(tmp_path / "missing.png"),
            str(tmp_path / "broken.jpg"), str(good[1]), "--json"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert [r["label"] for r in json.loads(captured.out)] == list(y_test[:2])
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("fastnn predict: error: ") for line in errors)
    assert "blank.png: holds no ink" in errors[0] and "missing.png: no such file" in errors[1]
    assert "broken.jpg" in errors[2]


def test_a_file_that_is_not_a_model_is_one_clear_line(mnist, tmp_path, capsys):
    _, _, x_test, _ = mnist
    paths = write_pngs(tmp_path, x_test[:1])
    np.savez(tmp_path / "weights.npz", w=np.zeros(3))
    (tmp_path / "notes.npz").write_text("hello")
    for name in ("weights.npz", "notes.npz", "absent.npz"):
        assert main(["predict", str(tmp_path / name), str(paths[0])]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        err = captured.err.strip()
        assert "\n" not in err and err.startswith("fastnn predict: error: ") and name in err


def test_predict_needs_a_path_and_a_positive_top(capsys):
    for argv in (["predict", "model.npz"], ["predict", "model.npz", "x.png", "--top", "0"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    capsys.readouterr()


# ---------------------------------------------------------------------- examples/predict_own_digit.py
def run_example(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               FASTNN_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "predict_own_digit.py"), *args], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_example_reads_the_seven_it_draws(model_file, tmp_path):
    out = run_example("--model-file", str(model_file), "--plot", str(tmp_path / "seven.png"))
    assert "prediction: 7 (" in out
    assert (tmp_path / "seven.png").stat().st_size > 10_000


@pytest.mark.slow
def test_example_trains_and_reads_an_image_file(mnist_dir, mnist, tmp_path):
    _, _, x_test, y_test = mnist
    Image.fromarray(255 - paste(uint8(x_test[0]))).save(tmp_path / "mine.png")  # a 7, dark on light, off-centre
    out = run_example(str(tmp_path / "mine.png"), "--limit", "2000", "--data", str(mnist_dir),
                      "--save", str(tmp_path / "m.npz"), "--plot", str(tmp_path / "mine-plot.png"))
    # 2,000 images are enough for this clear 7 (read as 7 at 100.0%; and the next three test digits alike)
    assert "training simple-cnn" in out and f"prediction: {y_test[0]} (" in out, out
    assert (tmp_path / "mine-plot.png").stat().st_size > 10_000
    model, _ = fastnn.load_model(tmp_path / "m.npz")  # the model it saved reads the file the same way
    model.to_backend()
    assert model.predict(load_digit(tmp_path / "mine.png")[None])[0] == y_test[0]
