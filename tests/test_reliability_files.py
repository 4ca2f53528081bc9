"""Safe files: model and checkpoint files are .npz + JSON read with allow_pickle=False; every kind
of damaged or hostile file is refused with a CheckpointError that names it, and
`fastnn evaluate` says so in one line and exits 1."""
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastnn import backends, optim
from fastnn.checkpoint import META_KEY, load_model, save_model
from fastnn.cli import main
from fastnn.errors import CheckpointError
from fastnn.layers import BatchNorm, Dense, Flatten, ReLU
from fastnn.model import Sequential
from fastnn.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def numpy_backend():
    backends.use("numpy")


def small_model():
    rng = np.random.default_rng(0)
    return Sequential([Flatten(), Dense(16, 8, rng=rng), BatchNorm(8), ReLU(), Dense(8, 3, rng=rng)], (1, 4, 4),
                      name="small")


def read(path):
    """(metadata, arrays) of a file as written, without any checks."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return json.loads(str(arrays.pop(META_KEY))), arrays


def write(path, metadata, arrays):
    np.savez(path, **{META_KEY: np.array(json.dumps(metadata))}, **arrays)  # savez pickles object arrays


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.npz"
    save_model(path, small_model())
    return path


@pytest.fixture
def checkpoint_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 4, 4), dtype=np.float32)
    y = rng.integers(0, 3, 40)
    trainer = Trainer(small_model(), optim.make("adam"), batch_size=8, seed=0, progress=False,
                      checkpoint_path=tmp_path / "ck.npz", checkpoint_every=3)
    trainer.fit(x, y, epochs=1)
    return tmp_path / "ck.npz"


def damaged(path, change):
    metadata, arrays = read(path)
    change(metadata, arrays)
    out = path.with_name("damaged.npz")
    write(out, metadata, arrays)
    return out


def set_shape(metadata, arrays):
    arrays["param/1.W"] = np.zeros((15, 8), np.float32)


def drop_array(metadata, arrays):
    del arrays["buffer/2.running_var"]


def unknown_layer(metadata, arrays):
    metadata["model"]["layers"][3]["type"] = "Softplus"


def pickled_array(metadata, arrays):
    arrays["param/1.b"] = np.array([{"a": 1}, len], dtype=object)


def extra_array(metadata, arrays):
    arrays["param/9.W"] = np.zeros(3, np.float32)


def nan_weight(metadata, arrays):
    arrays["param/4.W"][0, 0] = np.nan


def bad_layer_setting(metadata, arrays):
    metadata["model"]["layers"][1]["config"]["in_features"] = "sixteen"


def bad_dropout_free_setting(metadata, arrays):
    metadata["model"]["layers"][2]["config"]["momentum"] = "high"


def layers_that_do_not_fit(metadata, arrays):
    metadata["model"]["layers"][4]["config"]["in_features"] = 7


def extra_layer_argument(metadata, arrays):
    metadata["model"]["layers"][1]["config"]["activation"] = "relu"


def layers_not_a_list(metadata, arrays):
    metadata["model"]["layers"] = "Dense"


def wrong_format(metadata, arrays):
    metadata["format"] = "someone-elses"


def future_version(metadata, arrays):
    metadata["version"] = 99


def complex_array(metadata, arrays):
    arrays["param/1.b"] = arrays["param/1.b"].astype(np.complex64)


BAD_MODELS = {
    set_shape: "has shape (15, 8), the model needs (16, 8)",
    drop_array: "'buffer/2.running_var' is missing",
    unknown_layer: "unknown layer type 'Softplus'",
    pickled_array: "pickled object array",
    extra_array: "do not belong to its architecture",
    nan_weight: "NaN or infinite",
    bad_layer_setting: "in_features must be a positive whole number",
    bad_dropout_free_setting: "momentum must be a number",
    layers_that_do_not_fit: "Dense: expected input of shape (N, 7)",
    extra_layer_argument: "malformed architecture",
    layers_not_a_list: "list of layers",
    wrong_format: "not a fastnn-model or fastnn-checkpoint file",
    future_version: "file version 99",
    complex_array: "not a number type",
}


@pytest.mark.parametrize("change", BAD_MODELS, ids=lambda f: f.__name__)
def test_damaged_model_files_are_refused(model_file, change):
    path = damaged(model_file, change)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(path) in str(info.value) and BAD_MODELS[change] in str(info.value)


def raw_files(tmp_path, model_file):
    content = model_file.read_bytes()
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr(f"{META_KEY}.npy", content[:10])
        z.writestr("notes.txt", "hello")
    plain_npy = io.BytesIO()
    np.save(plain_npy, np.zeros(3))
    return {
        "empty": (b"", "not a .npz file"),
        "garbage": (np.random.default_rng(0).bytes(5000), "not a .npz file"),
        "whole-file pickle": (pickle.dumps({"param/1.W": np.zeros(3)}), "not a .npz file"),
        "plain .npy": (plain_npy.getvalue(), "not a .npz file"),
        "half": (content[:len(content) // 2], "not a .npz file"),
        "all but the last byte": (content[:-1], "not a .npz file"),
        "zip of other things": (zipped.getvalue(), "is not a .npy array"),
        "garbage after a zip header": (content[:4] + b"\0" * 200, "not a .npz file"),
    }


def test_truncated_garbage_and_foreign_files_are_refused(tmp_path, model_file):
    for name, (content, message) in raw_files(tmp_path, model_file).items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            load_model(path)


def test_metadata_that_is_not_a_json_object(tmp_path):
    for meta, message in (("{not json", "not valid JSON"), ("[1, 2]", "malformed metadata"),
                          ("3", "malformed metadata")):
        np.savez(tmp_path / "m.npz", **{META_KEY: np.array(meta)})
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path / "m.npz")
    np.savez(tmp_path / "m.npz", W=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a fastnn file"):
        load_model(tmp_path / "m.npz")


def test_every_truncation_and_byte_flip_is_refused_or_harmless(model_file):
    """Fuzz: cut the file anywhere or flip bytes anywhere: a CheckpointError, or (a flip in a part
    nothing reads) the very same model; never another exception, never different numbers."""
    content = model_file.read_bytes()
    good = load_model(model_file)[0].state_arrays()
    path = model_file.with_name("fuzz.npz")
    rng = np.random.default_rng(1)
    cuts = list(range(0, len(content), max(1, len(content) // 150)))
    flips = [rng.integers(0, len(content), rng.integers(1, 4)) for _ in range(300)]
    outcomes = {"refused": 0, "same": 0}
    for case in cuts + flips:
        if isinstance(case, int):
            mutated = content[:case]
        else:
            mutated = bytearray(content)
            for i in case:
                mutated[i] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(mutated))
        try:
            model = load_model(path)[0]
        except CheckpointError:
            outcomes["refused"] += 1
            continue
        got = model.state_arrays()
        assert got.keys() == good.keys() and all(np.array_equal(got[k], good[k]) for k in good)
        outcomes["same"] += 1
    assert outcomes["refused"] > len(cuts)


def break_rng(metadata, arrays):
    metadata["trainer"]["shuffle_rng"] = {"bit_generator": "PCG64", "state": "none"}


def break_step(metadata, arrays):
    metadata["trainer"]["step"] = -1


def break_history(metadata, arrays):
    metadata["trainer"]["history"] = "epochs"


def drop_trainer(metadata, arrays):
    del metadata["trainer"]


def unknown_optimizer(metadata, arrays):
    metadata["optimizer"]["name"] = "lbfgs"


def wrong_optimizer_state(metadata, arrays):
    arrays["optim/1.W/0"] = np.zeros((2, 2), np.float32)


def stray_optimizer_state(metadata, arrays):
    arrays["optim/7.W/0"] = np.zeros(2, np.float32)


def stray_array(metadata, arrays):
    arrays["extra/thing"] = np.zeros(2, np.float32)


def missing_optimizer_state(metadata, arrays):
    del arrays["optim/1.W/1"]


def float_steps(metadata, arrays):
    metadata["optimizer"]["steps"] = 2.5


BAD_CHECKPOINTS = {
    break_rng: "malformed trainer state",
    break_step: "trainer step must be a whole number",
    break_history: "history is not a list",
    drop_trainer: "malformed trainer settings",
    unknown_optimizer: "unknown optimizer 'lbfgs'",
    wrong_optimizer_state: "optimizer state for parameter 1.W has the wrong shape",
    stray_optimizer_state: "belongs to no parameter",
    stray_array: "belong to no part of a checkpoint",
    missing_optimizer_state: "optimizer state for parameter 1.W is missing",
    float_steps: "step count must be a whole number",
}


@pytest.mark.parametrize("change", BAD_CHECKPOINTS, ids=lambda f: f.__name__)
def test_damaged_checkpoints_are_refused(checkpoint_file, change):
    Trainer.from_checkpoint(checkpoint_file)  # the undamaged one loads
    path = damaged(checkpoint_file, change)
    with pytest.raises(CheckpointError) as info:
        Trainer.from_checkpoint(path)
    assert str(path) in str(info.value) and BAD_CHECKPOINTS[change] in str(info.value)


def test_a_model_file_cannot_resume_but_a_checkpoint_can_be_evaluated(model_file, checkpoint_file):
    with pytest.raises(CheckpointError, match="a model file cannot resume training"):
        Trainer.from_checkpoint(model_file)
    model, metadata = load_model(checkpoint_file)
    assert metadata["format"] == "fastnn-checkpoint" and model.name == "small"


@pytest.mark.parametrize("change", [set_shape, unknown_layer, pickled_array, nan_weight], ids=lambda f: f.__name__)
def test_evaluate_refuses_bad_files_in_one_line(model_file, change, capsys):
    path = damaged(model_file, change)
    assert main(["evaluate", str(path), "--backend", "numpy"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastnn evaluate: error: ") and BAD_MODELS[change] in err


def test_evaluate_in_a_real_process_exits_1_without_a_traceback(tmp_path, model_file):
    for name, (content, message) in raw_files(tmp_path, model_file).items():
        if name in ("garbage", "half"):
            (tmp_path / "bad.npz").write_bytes(content)
            result = subprocess.run([sys.executable, "-m", "fastnn", "evaluate", "bad.npz", "--backend", "numpy"],
                                    cwd=tmp_path, capture_output=True, text=True,
                                    env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
            assert result.returncode == 1 and "Traceback" not in result.stderr
            assert result.stderr.strip().count("\n") == 0 and message in result.stderr


@pytest.mark.parametrize("change", [break_rng, wrong_optimizer_state, break_history], ids=lambda f: f.__name__)
def test_a_refused_checkpoint_leaves_the_trainer_as_it_was(checkpoint_file, change):
    trainer = Trainer(small_model(), optim.make("adam"), batch_size=8, seed=0, progress=False)
    x = np.random.default_rng(5).random((16, 1, 4, 4), dtype=np.float32)
    trainer.fit(x, np.arange(16) % 3, epochs=1)
    before = (trainer.model.state_arrays(), trainer.optimizer.state_dict(), trainer.epoch,
              trainer.shuffle_rng.bit_generator.state, trainer.model.rng.bit_generator.state)
    before_optimizer = {k: a.copy() for k, a in before[1]["arrays"].items()}
    with pytest.raises(CheckpointError):
        trainer.resume(damaged(checkpoint_file, change))
    after = (trainer.model.state_arrays(), trainer.optimizer.state_dict(), trainer.epoch,
             trainer.shuffle_rng.bit_generator.state, trainer.model.rng.bit_generator.state)
    assert all(np.array_equal(before[0][k], after[0][k]) for k in before[0])
    assert after[1]["steps"] == before[1]["steps"] == 2
    assert all(np.array_equal(before_optimizer[k], after[1]["arrays"][k]) for k in before_optimizer)
    assert after[2:] == before[2:]
