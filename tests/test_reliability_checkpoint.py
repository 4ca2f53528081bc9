"""Checkpoints that lose nothing: kill training (SIGKILL) mid-run and mid-checkpoint-write, then
resume; the result must equal an uninterrupted run bit for bit, and the last checkpoint must
always load. Crashes at known points come from FASTNN_TEST_KILL (fastnn.config.test_kill_point).
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastnn import backends, optim
from fastnn.checkpoint import CHECKPOINT_FORMAT, load_arrays, load_model, save_model
from fastnn.cli import main
from fastnn.errors import CheckpointError, ConfigError, TrainingDivergedError
from fastnn.layers import BatchNorm, Dense, Dropout, Flatten, ReLU
from fastnn.model import Sequential
from fastnn.train import Trainer

from .conftest import MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]
# 500 images in batches of 64: 8 steps per epoch, the last one of 52 images
RUN = ["train", "--model", "mlp", "--limit", "500", "--batch-size", "64", "--epochs", "3", "--backend", "numpy",
       "--no-progress", "--seed", "3"]


def fastnn(args, tmp_path, mnist_dir, kill=None, wait=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), FASTNN_DATA=str(mnist_dir), FASTNN_NUM_THREADS="1",
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("FASTNN_TEST_KILL", None)
    if kill:
        env["FASTNN_TEST_KILL"] = kill
    command = [sys.executable, "-m", "fastnn", *map(str, args)]
    if not wait:
        return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def params(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if k != "__meta__"}


def assert_same_params(a, b):
    a, b = params(a), params(b)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key  # bitwise, no tolerance


def train_losses(metrics_path):
    return [m["train_loss"] for m in json.loads(Path(metrics_path).read_text())["epochs"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its final model and metrics."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST files not found at {MNIST_DIR}")  # (mnist_dir fails instead under CI)
    tmp = tmp_path_factory.mktemp("reference")
    result = fastnn(RUN + ["--save", "ref.npz", "--metrics", "ref.json"], tmp, MNIST_DIR)
    assert result.returncode == 0, result.stderr
    return tmp / "ref.npz", train_losses(tmp / "ref.json")


def checkpoint_position(path):
    metadata, _ = load_arrays(path, CHECKPOINT_FORMAT)
    return metadata["trainer"]["epoch"], metadata["trainer"]["step"], metadata["optimizer"]["steps"]


# Kill right after optimizer step N. With --checkpoint-every 3 checkpoints are written after steps
# 3, 6, 9, ... and after every epoch (steps 8, 16, 24); the kill comes before step N's own checkpoint.
# The last checkpoint is then at (epochs done, steps into the next epoch, optimizer steps):
@pytest.mark.parametrize("kill_step, expected", [(8, (0, 6, 6)), (10, (1, 1, 9)), (17, (2, 0, 16))])
def test_kill_mid_run_then_resume_matches_bitwise(tmp_path, mnist_dir, reference, kill_step, expected):
    ref_model, ref_losses = reference
    crashed = fastnn(RUN + ["--checkpoint", "ck.npz", "--checkpoint-every", "3", "--save", "out.npz"],
                     tmp_path, mnist_dir, kill=f"step:{kill_step}")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert not (tmp_path / "out.npz").exists()
    assert checkpoint_position(tmp_path / "ck.npz") == expected
    load_model(tmp_path / "ck.npz")  # the last checkpoint always loads, as a model too
    resumed = fastnn(["train", "--resume", "ck.npz", "--save", "out.npz", "--metrics", "out.json",
                      "--no-progress"], tmp_path, mnist_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming ck.npz: {expected[0]} epochs and {expected[1]} steps" in resumed.stdout
    assert_same_params(tmp_path / "out.npz", ref_model)
    assert train_losses(tmp_path / "out.json") == ref_losses  # the interrupted epoch's loss sum survives too


# --checkpoint-every 2 writes after steps 2, 4, 6 and 8 (step 8 ends epoch 1, so the checkpoint sits at its
# last step), then epoch 1's own checkpoint, then 10, ...; write N dies with half its bytes on disk.
@pytest.mark.parametrize("kill_write, expected", [(5, (0, 8, 8)), (6, (1, 0, 8))])
def test_kill_mid_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, mnist_dir, reference, kill_write,
                                                                 expected):
    ref_model, _ = reference
    crashed = fastnn(RUN + ["--checkpoint", "ck.npz", "--checkpoint-every", "2"], tmp_path, mnist_dir,
                     kill=f"write:{kill_write}")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    leftovers = list(tmp_path.glob(".ck.npz.*.tmp"))
    assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size < (tmp_path / "ck.npz").stat().st_size
    assert checkpoint_position(tmp_path / "ck.npz") == expected
    resumed = fastnn(["train", "--resume", "ck.npz", "--save", "out.npz", "--no-progress"], tmp_path, mnist_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_params(tmp_path / "out.npz", ref_model)
    assert not list(tmp_path.glob(".ck.npz.*.tmp"))  # the next write to ck.npz removed the dead one's


def test_kill_during_the_first_write_leaves_an_old_checkpoint_untouched(tmp_path, mnist_dir):
    (tmp_path / "ck.npz").write_bytes(b"an older file the crash must not touch")
    crashed = fastnn(RUN + ["--checkpoint", "ck.npz", "--checkpoint-every", "2"], tmp_path, mnist_dir,
                     kill="write:1")
    assert crashed.returncode == -signal.SIGKILL
    assert (tmp_path / "ck.npz").read_bytes() == b"an older file the crash must not touch"


# The child run of the Ctrl-C test: python -c CTRL_C_AT STEP ARGS... runs `fastnn ARGS...` and sends
# itself SIGINT (what Ctrl-C sends) right after optimizer step STEP, where FASTNN_TEST_KILL=step:N kills.
CTRL_C_AT = """
import signal, sys
from fastnn import train
from fastnn.cli import main
kill_point = train.test_kill
def ctrl_c_at(kind, count):
    if (kind, count) == ("step", int(sys.argv[1])):
        signal.raise_signal(signal.SIGINT)  # to this thread: KeyboardInterrupt comes before the next call
    kill_point(kind, count)
train.test_kill = ctrl_c_at
sys.exit(main(sys.argv[2:]))
"""


def test_ctrl_c_then_kills_mid_step_and_mid_write_keep_a_checkpoint_that_resumes_exactly(tmp_path, mnist_dir):
    """Ctrl-C after a step, SIGKILL after a step, SIGKILL halfway through a checkpoint write, each at a
    known point of a run that checkpoints every step: each time the checkpoint is the last one
    completed, intact, and nothing half-written is left once the run goes on; the final model is the
    uninterrupted run's, bit for bit."""
    run = ["train", "--model", "mlp", "--limit", "1200", "--batch-size", "20", "--epochs", "2", "--backend",
           "numpy", "--no-progress", "--seed", "5", "--optimizer", "momentum"]  # 60 steps per epoch
    reference = fastnn(run + ["--save", "ref.npz"], tmp_path, mnist_dir)
    assert reference.returncode == 0, reference.stderr
    checkpoint = tmp_path / "ck.npz"

    def leftovers():  # temporary files of checkpoint writes that never finished
        return list(tmp_path.glob(".ck.npz.*.tmp"))

    # 1. Ctrl-C right after step 10: a clean stop that says how to go on; the checkpoint is step 9's
    env = dict(os.environ, PYTHONPATH=str(ROOT), FASTNN_DATA=str(mnist_dir), FASTNN_NUM_THREADS="1",
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("FASTNN_TEST_KILL", None)
    stopped = subprocess.run([sys.executable, "-c", CTRL_C_AT, "10", *run, "--checkpoint", "ck.npz",
                              "--checkpoint-every", "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
    assert stopped.returncode == 130, stopped.stderr
    assert "continue with  fastnn train --resume ck.npz" in stopped.stderr and "Traceback" not in stopped.stderr
    assert checkpoint_position(checkpoint) == (0, 9, 9) and not leftovers()
    load_model(checkpoint)

    # 2. SIGKILL right after step 45, before its checkpoint: the checkpoint is step 44's
    resume = ["train", "--resume", "ck.npz", "--checkpoint-every", "1", "--no-progress"]
    killed = fastnn(resume, tmp_path, mnist_dir, kill="step:45")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert checkpoint_position(checkpoint) == (0, 44, 44) and not leftovers()
    load_model(checkpoint)

    # 3. SIGKILL with half of this process's 36th checkpoint on disk: writes 1-16 follow steps 45-60,
    # 17 ends epoch 1, 18-35 follow steps 61-78, so 36 is step 79's; the checkpoint stays step 78's
    killed = fastnn(resume, tmp_path, mnist_dir, kill="write:36")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert checkpoint_position(checkpoint) == (1, 18, 78)
    load_model(checkpoint)
    [half_written] = leftovers()
    assert 0 < half_written.stat().st_size < checkpoint.stat().st_size

    # and on to the end: the dead writer's half file is gone, the model is the uninterrupted run's
    final = fastnn(["train", "--resume", "ck.npz", "--save", "out.npz", "--no-progress"], tmp_path, mnist_dir)
    assert final.returncode == 0, final.stderr
    assert not leftovers()
    assert_same_params(tmp_path / "out.npz", tmp_path / "ref.npz")


# ---------------------------------------------------------------------- the Trainer API, in process
def tiny_model(seed):
    """Dropout and BatchNorm: the dropout generator and the running statistics must survive too."""
    rng = np.random.default_rng(seed)
    layers = [Flatten(), Dense(36, 24, rng=rng), BatchNorm(24), ReLU(), Dropout(0.3), Dense(24, 5, rng=rng)]
    return Sequential(layers, (1, 6, 6), name="tiny")


def tiny_data(n=150, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 6, 6), dtype=np.float32)
    return x, (x.reshape(n, -1)[:, :5].argmax(axis=1)).astype(np.int64)


def make_trainer(path=None, every=None):
    return Trainer(tiny_model(0), optim.make("adam", lr=0.01), batch_size=16, seed=7, progress=False,
                   checkpoint_path=path, checkpoint_every=every)


FIT = dict(epochs=4, patience=10)


@pytest.fixture
def numpy_backend():
    backends.use("numpy")


def test_resume_from_every_checkpoint_matches_bitwise(tmp_path, numpy_backend, monkeypatch):
    x, y = tiny_data()
    val = tiny_data(40, seed=2)
    snapshots = []
    original = Trainer.checkpoint

    def keep_a_copy(self, path=None):
        written = original(self, path)
        snapshots.append(Path(written).read_bytes())
        return written

    monkeypatch.setattr(Trainer, "checkpoint", keep_a_copy)
    reference = make_trainer(tmp_path / "ck.npz", every=3)
    history = reference.fit(x, y, validation=val, **FIT)
    monkeypatch.undo()
    expected = reference.model.state_arrays()
    # 10 steps per epoch, 4 epochs: checkpoints every 3 steps plus one per epoch
    assert len(snapshots) == 40 // 3 + 4
    for i, content in enumerate(snapshots):
        path = tmp_path / f"snapshot{i}.npz"
        path.write_bytes(content)
        trainer = Trainer.from_checkpoint(path)
        done = trainer.epoch
        trainer.fit(x, y, validation=val, epochs=FIT["epochs"] - done, patience=FIT["patience"])
        got = trainer.model.state_arrays()
        assert all(np.array_equal(got[k], expected[k]) for k in expected), f"snapshot {i}"
        assert [m["train_loss"] for m in trainer.history] == [m["train_loss"] for m in history]
        assert trainer.optimizer.steps == reference.optimizer.steps


def test_resume_into_an_existing_trainer(tmp_path, numpy_backend):
    x, y = tiny_data()
    first = make_trainer(tmp_path / "ck.npz", every=4)
    first.fit(x, y, epochs=1)
    second = make_trainer().resume(tmp_path / "ck.npz")
    assert (second.epoch, second.step, second.optimizer.steps) == (1, 0, 10)
    for trainer in (first, second):
        trainer.fit(x, y, epochs=1)
    a, b = first.model.state_arrays(), second.model.state_arrays()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_run(tmp_path, numpy_backend):
    x, y = tiny_data()
    make_trainer(tmp_path / "ck.npz").fit(x, y, epochs=1)
    other = Trainer(tiny_model(0), optim.make("sgd", lr=0.01), batch_size=16, seed=7, progress=False)
    with pytest.raises(CheckpointError, match="optimizer"):
        other.resume(tmp_path / "ck.npz")
    other = Trainer(tiny_model(0), optim.make("adam", lr=0.01), batch_size=8, seed=7, progress=False)
    with pytest.raises(CheckpointError, match="batch_size 16 differs"):
        other.resume(tmp_path / "ck.npz")
    wider = Sequential([Flatten(), Dense(36, 5)], (1, 6, 6))
    with pytest.raises(CheckpointError, match="architecture differs"):
        Trainer(wider, optim.make("adam", lr=0.01), batch_size=16, seed=7, progress=False).resume(tmp_path / "ck.npz")


def test_resume_mid_epoch_needs_the_same_data(tmp_path, numpy_backend, monkeypatch):
    x, y = tiny_data()
    original = Trainer.checkpoint

    def write_then_stop(self, path=None):
        original(self, path)
        raise KeyboardInterrupt  # stands in for a crash right after the first checkpoint

    monkeypatch.setattr(Trainer, "checkpoint", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "ck.npz", every=2).fit(x, y, epochs=1)
    monkeypatch.undo()
    resumed = Trainer.from_checkpoint(tmp_path / "ck.npz")
    assert (resumed.epoch, resumed.step) == (0, 2)
    with pytest.raises(ConfigError, match="same training data"):
        resumed.fit(x[:100], y[:100], epochs=1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy reports the overflow
def test_divergence_keeps_the_last_good_checkpoint(tmp_path, numpy_backend):
    x, y = tiny_data()
    trainer = make_trainer(tmp_path / "ck.npz")
    trainer.fit(x, y, epochs=1)
    before = (tmp_path / "ck.npz").read_bytes()
    trainer.optimizer.base_lr = 1e30  # far too large: the next steps overflow
    with pytest.raises(TrainingDivergedError) as info:
        trainer.fit(x, y, epochs=1)
    message = str(info.value)
    assert "learning rate" in message and "smaller --lr" in message and "step" in message
    assert "ck.npz (after 1 epochs and 0 steps), is kept" in message
    assert (tmp_path / "ck.npz").read_bytes() == before
    Trainer.from_checkpoint(tmp_path / "ck.npz")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy reports the overflow
def test_a_checkpoint_never_holds_non_finite_parameters(tmp_path, numpy_backend):
    x, y = tiny_data()
    trainer = make_trainer(tmp_path / "ck.npz", every=1)
    trainer.fit(x, y, epochs=1)
    trainer.optimizer.base_lr = 1e30
    with pytest.raises(TrainingDivergedError, match="learning rate"):
        trainer.fit(x, y, epochs=1)
    _, arrays = load_arrays(tmp_path / "ck.npz", CHECKPOINT_FORMAT)
    assert all(np.isfinite(a).all() for a in arrays.values())
    Trainer.from_checkpoint(tmp_path / "ck.npz")


def test_cli_divergence_exits_with_the_message_and_keeps_files(tmp_path, mnist_dir):
    good = fastnn(RUN + ["--epochs", "1", "--checkpoint", "ck.npz", "--save", "model.npz"], tmp_path, mnist_dir)
    assert good.returncode == 0, good.stderr
    digests = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in ("ck.npz", "model.npz")}
    bad = fastnn(RUN + ["--optimizer", "sgd", "--lr", "1e6", "--checkpoint", "ck.npz", "--save", "model.npz"],
                 tmp_path, mnist_dir)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert lines[-1].startswith("fastnn train: error: the loss became") and "Traceback" not in bad.stderr
    assert "step" in lines[-1] and "learning rate" in lines[-1] and "--lr" in lines[-1]
    for name, digest in digests.items():  # the run died before its first checkpoint: nothing was replaced
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    every_step = fastnn(RUN + ["--optimizer", "sgd", "--lr", "1e6", "--checkpoint", "ck2.npz",
                               "--checkpoint-every", "1"], tmp_path, mnist_dir)
    assert every_step.returncode == 1 and "The last checkpoint, ck2.npz" in every_step.stderr
    load_model(tmp_path / "ck2.npz")  # loadable: its parameters are finite


def test_resume_flags_that_contradict_the_checkpoint(tmp_path, mnist_dir, capsys):
    first = fastnn(RUN + ["--epochs", "1", "--checkpoint", "ck.npz"], tmp_path, mnist_dir)
    assert first.returncode == 0, first.stderr
    ck = str(tmp_path / "ck.npz")
    assert main(["train", "--resume", ck, "--lr", "0.5", "--data", str(mnist_dir)]) == 1
    err = capsys.readouterr().err
    assert "--lr 0.5 differs from the None that the run in" in err and "drop --lr" in err
    save_model(tmp_path / "model.npz", load_model(ck)[0])
    assert main(["train", "--resume", str(tmp_path / "model.npz"), "--data", str(mnist_dir)]) == 1
    assert "a model file cannot resume training" in capsys.readouterr().err
    same = fastnn(["train", "--resume", "ck.npz", "--model", "mlp", "--epochs", "2", "--no-progress"],
                  tmp_path, mnist_dir)
    assert same.returncode == 0, same.stderr
    assert "epoch 2/2" in same.stdout and "epoch 1/" not in same.stdout
    done = fastnn(["train", "--resume", "ck.npz", "--no-progress"], tmp_path, mnist_dir)
    assert done.returncode == 0 and "nothing left to train" in done.stdout


def test_a_regularized_run_resumes_only_with_its_regularizer(tmp_path, numpy_backend):
    from fastnn.regularization import L2
    x, y = tiny_data()
    reference = Trainer(tiny_model(0), optim.make("sgd", lr=0.1), batch_size=16, seed=7, progress=False,
                        regularizer=L2(0.01))
    reference.fit(x, y, epochs=2)
    first = Trainer(tiny_model(0), optim.make("sgd", lr=0.1), batch_size=16, seed=7, progress=False,
                    regularizer=L2(0.01), checkpoint_path=tmp_path / "ck.npz", checkpoint_every=7)
    first.fit(x, y, epochs=1)
    with pytest.raises(CheckpointError, match=r"the run used regularizer L2\(.*\), this trainer None"):
        Trainer.from_checkpoint(tmp_path / "ck.npz")
    resumed = Trainer.from_checkpoint(tmp_path / "ck.npz", regularizer=L2(0.01))
    resumed.fit(x, y, epochs=1)
    a, b = reference.model.state_arrays(), resumed.model.state_arrays()
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["numba", "cython"])
def test_resume_is_exact_on_the_compiled_cpu_backends(tmp_path, monkeypatch, name):
    from .conftest import load_or_skip
    backends.use(load_or_skip(name).NAME)
    x, y = tiny_data()
    reference = make_trainer()
    reference.fit(x, y, epochs=2)
    original = Trainer.checkpoint

    def write_then_stop(self, path=None):
        original(self, path)
        if self.step:  # a mid-epoch checkpoint: crash right after it
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "checkpoint", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "ck.npz", every=13).fit(x, y, epochs=2)
    monkeypatch.undo()
    resumed = Trainer.from_checkpoint(tmp_path / "ck.npz")
    assert (resumed.epoch, resumed.step) == (1, 3)
    resumed.fit(x, y, epochs=1)
    a, b = reference.model.state_arrays(), resumed.model.state_arrays()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_warmup_leaves_the_run_exactly_as_it_was(numpy_backend):
    x, y = tiny_data()
    trainer = make_trainer()
    trainer.fit(x, y, epochs=1)  # non-zero Adam state, BatchNorm statistics, a used dropout generator
    before = (trainer.model.state_arrays(), {k: a.copy() for k, a in trainer.optimizer.state_dict()["arrays"].items()},
              trainer.optimizer.steps, trainer.model.rng.bit_generator.state, trainer.shuffle_rng.bit_generator.state)
    trainer.warmup()
    after = (trainer.model.state_arrays(), trainer.optimizer.state_dict()["arrays"], trainer.optimizer.steps,
             trainer.model.rng.bit_generator.state, trainer.shuffle_rng.bit_generator.state)
    for i in (0, 1):
        assert before[i].keys() == after[i].keys() and all(np.array_equal(before[i][k], after[i][k]) for k in before[i])
    assert before[2:] == after[2:]
    assert all(layer.rng is trainer.model.rng for layer in trainer.model.layers if isinstance(layer, Dropout))
