"""Files that cannot hurt: a tiny forged model file allocates nothing big, `fastnn evaluate` reads
the data set a checkpoint was trained on, a killed write's leftover is cleaned up by the next
write, the command line is parsed once, and model.py knows nothing of files."""
import ast
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastnn.data
from fastnn import backends, cli, optim
from fastnn.checkpoint import load_model, save_model
from fastnn.errors import CheckpointError
from fastnn.train import Trainer

from .test_reliability_files import read, small_model, write

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def numpy_backend():
    backends.use("numpy")


def peak_bytes_while(call):
    tracemalloc.start()
    try:
        call()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_a_forged_huge_layer_is_refused_before_it_allocates(tmp_path):
    path = tmp_path / "model.npz"
    save_model(path, small_model())
    metadata, arrays = read(path)
    metadata["model"]["layers"][1]["config"].update(in_features=16, out_features=10 ** 6)  # 64 MB of weights
    metadata["model"]["layers"][4]["config"]["in_features"] = 10 ** 6
    forged = tmp_path / "forged.npz"
    write(forged, metadata, arrays)
    assert forged.stat().st_size < 8192
    errors = []
    peak = peak_bytes_while(lambda: errors.append(pytest.raises(CheckpointError, load_model, forged)))
    assert "array 'param/1.W' has shape (16, 8), the model needs (16, 1000000)" in str(errors[0].value)
    assert peak < 4 << 20, f"{peak:,} bytes allocated to refuse a {forged.stat().st_size:,}-byte file"
    del arrays["param/1.W"]  # and a huge layer whose weights the file leaves out
    write(forged, metadata, arrays)
    with pytest.raises(CheckpointError, match=r"'param/1.W' is missing \(layer 1, Dense, declares it"):
        load_model(forged)


def test_an_array_header_that_promises_more_than_the_file_holds_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    save_model(path, small_model())
    forged = tmp_path / "forged.npz"
    header = {"descr": "<f4", "fortran_order": False, "shape": (100_000, 100_000)}  # 40 GB declared
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            if info.filename != "param/1.W.npy":
                dst.writestr(info, src.read(info))
        npy = zipfile.ZipInfo("param/1.W.npy")
        body = np.lib.format.magic(1, 0) + _padded_header(header) + np.zeros(4, np.float32).tobytes()
        dst.writestr(npy, body)
    assert forged.stat().st_size < 8192
    errors = []
    peak = peak_bytes_while(lambda: errors.append(pytest.raises(CheckpointError, load_model, forged)))
    assert "declares a (100000, 100000) float32 array (40,000,000,000 bytes) but holds 16 bytes" \
        in str(errors[0].value)
    assert peak < 4 << 20


def _padded_header(header):
    text = repr(header).encode("latin1")
    text += b" " * (-(len(text) + 10 + 1) % 64) + b"\n"
    return len(text).to_bytes(2, "little") + text


def test_evaluate_uses_the_data_set_a_checkpoint_was_trained_on(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.random((20, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, 20)
    Trainer(small_model(), optim.make("sgd"), batch_size=10, progress=False, checkpoint_path=tmp_path / "ck.npz",
            settings={"dataset": "fashion-mnist", "model": "small"}).fit(x, y, epochs=1)
    asked = []

    def fake_load(name, data_dir=None, **kwargs):
        asked.append(name)
        return x, y, x, y

    monkeypatch.setattr(fastnn.data, "load_mnist", fake_load)
    assert cli.main(["evaluate", str(tmp_path / "ck.npz"), "--backend", "numpy"]) == 0
    assert asked == ["fashion-mnist"]  # was "mnist": the checkpoint keeps it in its run settings
    assert cli.main(["evaluate", str(tmp_path / "ck.npz"), "--backend", "numpy", "--dataset", "mnist"]) == 0
    assert asked[-1] == "mnist"  # the command line still wins
    assert "test accuracy" in capsys.readouterr().out


def test_the_next_write_removes_a_killed_writers_temporary_file(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)  # a process that has exited
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = tmp_path / f".model.npz.{dead_pid}.k3j2.tmp"
        live = tmp_path / f".model.npz.{alive.pid}.a9x1.tmp"  # a writer still at work
        other = tmp_path / f".other.npz.{dead_pid}.zz.tmp"  # another file's
        for leftover in (dead, live, other):
            leftover.write_bytes(b"half a file")
        save_model(tmp_path / "model.npz", small_model())
        assert not dead.exists() and live.exists() and other.exists()
        assert load_model(tmp_path / "model.npz")[0].name == "small"
    finally:
        alive.kill()
        alive.wait()


def test_the_command_line_is_parsed_once(monkeypatch):
    parsed, seen = [], []
    original = cli.argparse.ArgumentParser.parse_args

    def counting(self, *args, **kwargs):
        parsed.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cli.argparse.ArgumentParser, "parse_args", counting)
    monkeypatch.setitem(cli.COMMANDS, "train", lambda args: seen.append(args) or 0)
    assert cli.main(["train", "--lr", "0.1", "--epochs", "2", "--no-progress"]) == 0
    args = seen[0]
    assert len(parsed) == 1
    assert args.given == {"lr", "epochs"}  # what a resumed run takes from the command line
    assert (args.lr, args.epochs, args.model, args.batch_size, args.lr_decay) == (0.1, 2, "simple-cnn", 100, None)


def test_files_depend_on_models_not_the_other_way():
    tree = ast.parse((ROOT / "fastnn" / "model.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "checkpoint" not in imported and "train" not in imported, imported
    tree = ast.parse((ROOT / "fastnn" / "checkpoint.py").read_text())
    assert "model" in {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}


def _entries_replaced(model_file, forged, body, compress_type=zipfile.ZIP_STORED):
    """``model_file`` with its param/1.W entry replaced by ``body`` (raw .npy bytes)."""
    with zipfile.ZipFile(model_file) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            if info.filename != "param/1.W.npy":
                dst.writestr(info, src.read(info))
        dst.writestr(zipfile.ZipInfo("param/1.W.npy"), body, compress_type=compress_type)


def _npy(shape, data_bytes):
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    return np.lib.format.magic(1, 0) + _padded_header(header) + bytes(data_bytes)


def _claim(forged, sizes_at, claimed):
    """Overwrite param/1.W.npy's sizes (offsets within the local header and the central directory)."""
    raw = bytearray(forged.read_bytes())
    for signature, name_length_at, name_at, offsets in zip((b"PK\x03\x04", b"PK\x01\x02"), (26, 28), (30, 46),
                                                          sizes_at):
        at = raw.find(signature)
        while at >= 0:
            length = int.from_bytes(raw[at + name_length_at:at + name_length_at + 2], "little")
            if raw[at + name_at:at + name_at + length] == b"param/1.W.npy":
                for offset in offsets:
                    raw[at + offset:at + offset + 4] = claimed.to_bytes(4, "little")
            at = raw.find(signature, at + 4)
    forged.write_bytes(raw)


def test_a_zip_directory_that_claims_its_entry_stores_more_than_the_file_is_refused(tmp_path):
    """Stored and unpacked sizes both claim 3.6 GB in a 4 KB file: the file's own size bounds them."""
    path = tmp_path / "model.npz"
    save_model(path, small_model())
    forged = tmp_path / "forged.npz"
    body = _npy((30_000, 30_000), 16)
    _entries_replaced(path, forged, body)
    claimed = len(body) - 16 + 30_000 * 30_000 * 4
    _claim(forged, ((18, 22), (20, 24)), claimed)  # compressed and uncompressed sizes, in both headers
    errors = []
    peak = peak_bytes_while(lambda: errors.append(pytest.raises(CheckpointError, load_model, forged)))
    assert f"claims {claimed:,} stored bytes, more than the whole file's" in str(errors[0].value)
    assert peak < 4 << 20


def test_a_zip_directory_that_claims_more_than_the_entry_stores_is_refused(tmp_path):
    """The .npy header and the zip directory agree on 3.6 GB, but the entry stores 16 bytes: the
    directory's unpacked size is the forger's word too, only the stored size is what the file holds."""
    path = tmp_path / "model.npz"
    save_model(path, small_model())
    forged = tmp_path / "forged.npz"
    body = _npy((30_000, 30_000), 16)
    _entries_replaced(path, forged, body)
    raw = bytearray(forged.read_bytes())
    claimed = len(body) - 16 + 30_000 * 30_000 * 4
    for signature, size_at, name_length_at, name_at in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        at = raw.find(signature)
        while at >= 0:  # the local header and the central directory entry both claim it
            length = int.from_bytes(raw[at + name_length_at:at + name_length_at + 2], "little")
            if raw[at + name_at:at + name_at + length] == b"param/1.W.npy":
                raw[at + size_at:at + size_at + 4] = claimed.to_bytes(4, "little")
            at = raw.find(signature, at + 4)
    forged.write_bytes(raw)
    with zipfile.ZipFile(forged) as archive:
        assert archive.getinfo("param/1.W.npy").file_size == claimed  # the forgery took
    assert forged.stat().st_size < 8192
    errors = []
    peak = peak_bytes_while(lambda: errors.append(pytest.raises(CheckpointError, load_model, forged)))
    assert f"entry 'param/1.W.npy' unpacks to {claimed:,} bytes by the zip directory but stores {len(body):,}" \
        in str(errors[0].value)
    assert peak < 4 << 20, f"{peak:,} bytes allocated to refuse a {forged.stat().st_size:,}-byte file"


def test_a_compressed_entry_is_refused_before_it_is_inflated(tmp_path):
    """A deflated entry's unpacked size can be a thousand times the file's (a zip bomb): fastnn writes
    its files uncompressed and refuses a compressed entry without inflating it."""
    path = tmp_path / "model.npz"
    save_model(path, small_model())
    forged = tmp_path / "forged.npz"
    _entries_replaced(path, forged, _npy((1000, 10_000), 1000 * 10_000 * 4), zipfile.ZIP_DEFLATED)  # 40 MB
    assert forged.stat().st_size < 100_000
    errors = []
    peak = peak_bytes_while(lambda: errors.append(pytest.raises(CheckpointError, load_model, forged)))
    assert "entry 'param/1.W.npy' is compressed" in str(errors[0].value)
    assert peak < 4 << 20, f"{peak:,} bytes allocated to refuse a {forged.stat().st_size:,}-byte file"
