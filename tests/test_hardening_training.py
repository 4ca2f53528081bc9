"""Training stops on parameters that are no longer finite even when the loss is, and a run with a
decaying learning rate resumes into a new trainer in the same process."""
import numpy as np
import pytest

from fastnn import backends, optim
from fastnn.errors import TrainingDivergedError
from fastnn.layers import BatchNorm, Dense, Flatten, ReLU
from fastnn.model import Sequential
from fastnn.train import Trainer


@pytest.fixture(autouse=True)
def numpy_backend():
    backends.use("numpy")


def tiny_model():
    rng = np.random.default_rng(0)
    return Sequential([Flatten(), Dense(36, 16, rng=rng), BatchNorm(16), ReLU(), Dense(16, 5, rng=rng)],
                      (1, 6, 6), name="tiny")


def tiny_data(n=160, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 6, 6), dtype=np.float32)
    return x, x.reshape(n, -1)[:, :5].argmax(axis=1).astype(np.int64)


def poison_after(trainer, step):
    """After optimizer step ``step``, a NaN in BatchNorm's running mean: training (batch statistics)
    never reads it, so every later loss stays finite, but the model it would save is broken."""
    update = trainer.optimizer.step

    def step_then_poison(model):
        update(model)
        if trainer.optimizer.steps == step:
            model.layers[2].buffers["running_mean"][3] = np.nan
    trainer.optimizer.step = step_then_poison


def test_a_nan_the_loss_never_sees_stops_training(tmp_path):
    x, y = tiny_data()  # 10 steps per epoch
    trainer = Trainer(tiny_model(), optim.make("sgd", lr=0.1), batch_size=16, progress=False,
                      checkpoint_path=tmp_path / "ck.npz", finite_check_every=4)
    trainer.fit(x, y, epochs=1)
    good = (tmp_path / "ck.npz").read_bytes()
    poison_after(trainer, 13)
    losses = []
    trainer.train_step = lambda xb, yb, step=trainer.train_step: losses.append(step(xb, yb)) or losses[-1]
    with pytest.raises(TrainingDivergedError, match=r"2\.buffer|running_mean") as info:
        trainer.fit(x, y, epochs=2)
    assert "step 16" in str(info.value) and "is kept as it was" in str(info.value)
    assert len(losses) == 6 and np.isfinite(losses).all()  # the loss never noticed
    assert (tmp_path / "ck.npz").read_bytes() == good  # the last good checkpoint is untouched


def test_the_check_runs_at_every_epoch_end_even_when_switched_off_between(tmp_path):
    x, y = tiny_data()
    trainer = Trainer(tiny_model(), optim.make("sgd", lr=0.1), batch_size=16, progress=False,
                      finite_check_every=None)
    poison_after(trainer, 3)
    with pytest.raises(TrainingDivergedError, match="step 10"):
        trainer.fit(x, y, epochs=2)
    assert trainer.epoch == 0


def test_resume_after_lr_decay_into_a_new_trainer(tmp_path):
    x, y = tiny_data()

    def make(path=None):
        return Trainer(tiny_model(), optim.make("sgd", lr=0.1, lr_decay=0.5), batch_size=16, seed=3,
                       progress=False, checkpoint_path=path)

    first = make(tmp_path / "ck.npz")
    first.fit(x, y, epochs=1)
    assert first.optimizer.lr == pytest.approx(0.05)
    second = make().resume(tmp_path / "ck.npz")  # was refused: the file's optimizer held lr 0.05
    assert second.optimizer.lr == pytest.approx(0.05) and second.optimizer.config()["lr"] == 0.1
    for trainer in (first, second):
        trainer.fit(x, y, epochs=1)
    assert second.optimizer.lr == pytest.approx(0.025)
    a, b = first.model.state_arrays(), second.model.state_arrays()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    resumed = Trainer.from_checkpoint(tmp_path / "ck.npz")  # and from the file alone, as the CLI does
    assert resumed.optimizer.lr == pytest.approx(0.025) and resumed.optimizer.config()["lr"] == 0.1
