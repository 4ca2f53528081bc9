"""Training stops on parameters that are no longer finite even when the loss is; Trainer.train_step
checks its batch before any kernel sees it."""
import numpy as np
import pytest

from fastnn import backends, optim
from fastnn.backends import contract
from fastnn.errors import ShapeError, TrainingDivergedError
from fastnn.layers import BatchNorm, Dense, Dropout, Flatten, ReLU
from fastnn.model import Sequential
from fastnn.train import Trainer

from .conftest import SIMULATED_CUDA, load_or_skip


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


@pytest.mark.parametrize("name", ["numpy", "numba", "cython", "cuda"])
def test_train_step_refuses_a_bad_batch_before_any_kernel_runs(name, monkeypatch):
    """A compiled kernel indexes without bounds checks, so a label of 10 for 10 classes must be
    refused before the forward pass, not by the loss after it: nothing runs, nothing changes
    (BatchNorm's running statistics, the dropout generator, the parameters)."""
    K = load_or_skip(name)
    backends.use(name)
    rng = np.random.default_rng(0)
    model = Sequential([Flatten(), Dense(36, 16, rng=rng), BatchNorm(16), ReLU(), Dropout(0.5),
                        Dense(16, 10, rng=rng)], (1, 6, 6), name="ten-classes")
    trainer = Trainer(model, optim.make("sgd", lr=0.1), batch_size=4, progress=False)
    x, y = rng.random((4, 1, 6, 6), dtype=np.float32), np.array([0, 1, 9, 2])
    host = {  # arrays in host memory: everything is checked, the label range too
        "label 10": (x, np.array([0, 1, 10, 2]), r"train_step labels: class indices must lie in \[0, 10\)"),
        "label -1": (x, [0, -1, 3, 2], r"train_step labels: class indices must lie in \[0, 10\)"),
        "three labels for four images": (x, y[:3], r"train_step labels: expected shape \(4,\)"),
        "float labels": (x, y.astype(np.float32), "train_step labels: expected integer class indices"),
        "float64 images": (x.astype(np.float64), y, "train_step images: expected float32 images"),
        "flat images": (x.reshape(4, 36), y, r"train_step images: .* expects \(N, 1, 6, 6\)"),
    }
    # arrays already in the backend's memory (on cuda: device arrays, checked without a copy back)
    dev = {f"{case} (in backend memory)": (K.to_device(xb), K.to_device(yb), pattern)
           for case, (xb, yb, pattern) in host.items()
           if case in ("three labels for four images", "float labels", "flat images")}
    state, dropout = model.state_arrays(), model.rng.bit_generator.state
    calls = []

    def logged(kernel, call):
        return lambda *args, **kwargs: calls.append(kernel) or call(*args, **kwargs)
    for kernel in contract.NAMES:
        monkeypatch.setattr(K, kernel, logged(kernel, getattr(K, kernel)))
    for case, (xb, yb, pattern) in {**host, **dev}.items():
        with pytest.raises(ShapeError, match=pattern):
            trainer.train_step(xb, yb)
        assert calls == [], f"{case}: kernels ran before the refusal: {calls}"
    monkeypatch.undo()
    assert model.rng.bit_generator.state == dropout and trainer.optimizer.steps == 0
    for key, value in model.state_arrays().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    if name == "cuda" and SIMULATED_CUDA:
        return  # the simulator takes about 14 s for the step below; tests/backends/test_cuda_backend.py runs steps
    loss = trainer.train_step(x, y)  # host arrays, put into the backend's memory by train_step
    assert np.isfinite(loss) and trainer.optimizer.steps == 1
