"""The MNIST loader: real files, IDX round trips, corruption, and downloads from a local server."""
import functools
import gzip
import hashlib
import http.server
import shutil
import threading

import numpy as np
import pytest

from fastnn.data import DATASETS, FILES, download, load_mnist, read_idx, write_idx
from fastnn.errors import DataError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist(mnist_dir):
    x_train, y_train, x_test, y_test = load_mnist("mnist", mnist_dir, download_missing=False, progress=False)
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert np.bincount(y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == TEST_COUNTS
    # the first training image is a 5, and its brightest pixels are 255 -> 1.0
    assert y_train[0] == 5 and (x_train[0] == 1.0).sum() > 0


def test_real_files_match_canonical_checksums(mnist_dir):
    for name in FILES:
        content = gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())
        assert hashlib.md5(content).hexdigest() == DATASETS["mnist"]["md5"][name]


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(5,), (3, 4, 2), (2, 28, 28)])
def test_idx_round_trip(tmp_path, rng, suffix, shape):
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / f"a-idx{suffix}"
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, array)


def make_dataset_dir(directory, mnist_dir, corrupt=None):
    """A copy of the real files; ``corrupt`` = (file name, bytes -> bytes) changes one of them."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(mnist_dir / f"{name}.gz", directory / f"{name}.gz")
    if corrupt:
        name, change = corrupt
        path = directory / f"{name}.gz"
        path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))
    return directory


def flip_one_byte(content):
    content = bytearray(content)
    content[1000] ^= 0xFF
    return bytes(content)


@pytest.mark.parametrize("name,change,message", [
    ("t10k-labels-idx1-ubyte", flip_one_byte, "checksum mismatch"),
    ("t10k-images-idx3-ubyte", lambda c: c[:-100], "checksum mismatch"),
])
def test_corrupt_or_truncated_content_is_detected(tmp_path, mnist_dir, name, change, message):
    make_dataset_dir(tmp_path, mnist_dir, corrupt=(name, change))
    with pytest.raises(DataError, match=message) as info:
        load_mnist("mnist", tmp_path, download_missing=False, progress=False)
    assert name in str(info.value) and "delete it" in str(info.value)


def test_truncated_gzip_is_detected(tmp_path, mnist_dir):
    make_dataset_dir(tmp_path, mnist_dir)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_mnist("mnist", tmp_path, download_missing=False, progress=False)


def test_read_idx_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x07")
    with pytest.raises(DataError, match="wrong magic number"):
        read_idx(bad_magic)
    short = tmp_path / "short"
    write_idx(short, np.zeros((4, 3), np.uint8))
    short.write_bytes(short.read_bytes()[:-2])
    with pytest.raises(DataError, match="truncated"):
        read_idx(short)


def test_missing_files_offline_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        load_mnist("mnist", tmp_path / "explicit", download_missing=False)
    message = str(info.value)
    for place in ("explicit", "env", "cache"):
        assert str(tmp_path / place) in message
    assert "FASTNN_DATA" in message and "train-images-idx3-ubyte.gz" in message


def test_search_order_explicit_then_env_then_cache(tmp_path, mnist_dir, monkeypatch):
    make_dataset_dir(tmp_path / "cache" / "fastnn" / "mnist", mnist_dir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    from fastnn.data import find
    assert find("mnist", tmp_path / "nothing-here")[FILES[0]].parent == tmp_path / "cache" / "fastnn" / "mnist"
    make_dataset_dir(tmp_path / "env", mnist_dir)
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "env"))
    assert find("mnist")[FILES[0]].parent == tmp_path / "env"
    assert find("mnist", mnist_dir)[FILES[0]].parent == mnist_dir


@pytest.fixture
def http_server(tmp_path, mnist_dir):
    """A server on 127.0.0.1: /good/ serves the real files, /corrupt/ a corrupt copy, /missing/ nothing."""
    root = tmp_path / "www"
    make_dataset_dir(root / "good", mnist_dir)
    make_dataset_dir(root / "corrupt", mnist_dir, corrupt=("train-labels-idx1-ubyte", flip_one_byte))
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_falls_back_to_the_next_mirror(tmp_path, http_server):
    target = tmp_path / "downloaded"
    mirrors = [f"{http_server}/missing/", f"{http_server}/corrupt/", f"{http_server}/good/"]
    paths = download("mnist", target, mirrors=mirrors, progress=False)
    assert sorted(p.name for p in paths.values()) == sorted(f"{name}.gz" for name in FILES)
    assert not list(target.glob(".*"))  # no partial files left behind
    _, y_train, _, y_test = load_mnist("mnist", target, download_missing=False, progress=False)
    assert np.bincount(y_test).tolist() == TEST_COUNTS


def test_load_downloads_into_the_cache_when_absent(tmp_path, http_server, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    monkeypatch.setitem(DATASETS["mnist"], "mirrors", (f"{http_server}/missing/", f"{http_server}/good/"))
    x_train, _, _, _ = load_mnist("mnist", progress=False)
    assert x_train.shape == (60000, 1, 28, 28)
    assert (tmp_path / "cache" / "fastnn" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_download_from_no_working_mirror_is_a_clear_error(tmp_path, http_server, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    monkeypatch.setitem(DATASETS["mnist"], "mirrors", (f"{http_server}/missing/", f"{http_server}/corrupt/"))
    with pytest.raises(DataError) as info:
        load_mnist("mnist", progress=False)
    message = str(info.value)
    assert "download failed" in message and "/missing/" in message and "checksum mismatch" in message
    assert not list((tmp_path / "cache" / "fastnn" / "mnist").glob("train-labels*"))
