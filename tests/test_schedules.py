"""Learning-rate schedules: PyTorch's formulas at chosen steps (the expected values are worked out
here from the formulas in PyTorch's documentation, not copied from a PyTorch run), the trainer
setting them before every step, and exact resumes with every schedule."""
import math

import numpy as np
import pytest

from fastnn import RandomAffine, backends, optim, schedules
from fastnn.errors import ConfigError
from fastnn.train import Trainer

from .test_hardening_training import tiny_data, tiny_model


@pytest.fixture(autouse=True)
def numpy_backend():
    backends.use("numpy")


BASE = 0.1


def rates(schedule, total, per_epoch=10, steps=None):
    return [schedule.lr(t, total, per_epoch, BASE) for t in (range(total) if steps is None else steps)]


def test_constant():
    assert rates(schedules.Constant(), 25) == [BASE] * 25


def test_step_decays_once_per_epoch_by_default_and_every_step_size_when_given():
    assert rates(schedules.Step(gamma=0.5), 30, per_epoch=10, steps=[0, 9, 10, 19, 20, 29]) == \
        pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025], rel=1e-12)
    assert rates(schedules.Step(gamma=0.1, step_size=4), 30, steps=[3, 4, 8, 12]) == \
        pytest.approx([0.1, 0.01, 0.001, 0.0001], rel=1e-12)


def test_cosine_anneals_from_the_base_rate_to_eta_min_over_the_run():
    total, eta_min = 50, 0.001
    want = {0: BASE, 25: (BASE + eta_min) / 2, 50: eta_min,
            10: eta_min + (BASE - eta_min) * (1 + math.cos(math.pi * 10 / 50)) / 2}
    got = rates(schedules.Cosine(eta_min=eta_min), total, steps=list(want))
    assert got == pytest.approx(list(want.values()), rel=1e-12)


def test_a_warmup_rises_linearly_from_a_third_then_the_schedule_runs_over_the_rest():
    schedule, total, w = schedules.Cosine(warmup=6), 46, 6
    warm = rates(schedule, total, steps=range(w))
    assert warm == pytest.approx([BASE * (1 / 3 + (2 / 3) * t / w) for t in range(w)], rel=1e-12)
    assert rates(schedule, total, steps=[w, w + 20, total]) == pytest.approx([BASE, BASE / 2, 0.0], abs=1e-15)
    assert rates(schedules.Constant(warmup=4, warmup_start=0.5), 10, steps=[0, 2, 4, 9]) == \
        pytest.approx([0.05, 0.075, 0.1, 0.1], rel=1e-12)


def test_onecycle_rises_over_pct_start_then_falls_to_its_floor():
    """OneCycleLR(max_lr=0.1, total_steps=100), cos annealing: the first phase ends at step
    pct_start * 100 - 1 = 29, where the rate peaks; the last step has max_lr / 25 / 1e4."""
    total, peak_step = 100, 29
    low, floor = BASE / 25, BASE / 25 / 1e4

    def rising(t):  # half a cosine from low up to BASE over steps 0..29
        return BASE + (low - BASE) * (1 + math.cos(math.pi * t / peak_step)) / 2

    def falling(t):  # and from BASE down to floor over steps 29..99
        return floor + (BASE - floor) * (1 + math.cos(math.pi * (t - peak_step) / (total - 1 - peak_step))) / 2

    steps = [0, 1, 15, 29, 30, 64, 98, 99]
    want = [rising(t) if t <= peak_step else falling(t) for t in steps]
    assert rates(schedules.OneCycle(), total, steps=steps) == pytest.approx(want, rel=1e-12)
    assert want[0] == pytest.approx(low) and want[3] == pytest.approx(BASE) and want[-1] == pytest.approx(floor)
    # warmup=W sets the rising phase instead of pct_start: the peak moves to step W - 1
    assert rates(schedules.OneCycle(warmup=10), total, steps=[9])[0] == pytest.approx(BASE, rel=1e-12)
    assert rates(schedules.OneCycle(), total, steps=[150]) == pytest.approx([floor])  # past the end: its last rate


def test_onecycle_cycles_the_momentum_against_the_rate_only_when_asked():
    total = 100
    assert schedules.OneCycle().momentum(5, total) is None
    cycling = schedules.OneCycle(cycle_momentum=True, base_momentum=0.8, max_momentum=0.9)
    got = [cycling.momentum(t, total) for t in (0, 29, 64, 99)]
    middle = 0.9 + (0.8 - 0.9) * (1 + math.cos(math.pi * 35 / 70)) / 2
    assert got == pytest.approx([0.9, 0.8, middle, 0.9], rel=1e-12)


@pytest.mark.parametrize("name,params,message", [
    ("cosine", {"eta_min": -1}, "eta_min"), ("step", {"gamma": 0}, "gamma"), ("step", {"gamma": 1.5}, "gamma"),
    ("onecycle", {"pct_start": 1.0}, "pct_start"), ("constant", {"warmup": -1}, "warmup"),
    ("constant", {"warmup": 2.5}, "warmup"), ("linear", {}, "unknown schedule 'linear'"),
    ("cosine", {"gamma": 0.5}, "schedule 'cosine'"),
])
def test_bad_settings_are_named(name, params, message):
    with pytest.raises(ConfigError, match=message):
        schedules.make(name, **params)


def test_config_rebuilds_the_schedule():
    for schedule in (schedules.Step(gamma=0.3, step_size=7, warmup=2), schedules.OneCycle(pct_start=0.2),
                     schedules.Cosine(eta_min=1e-4), schedules.Constant(warmup=3)):
        again = schedules.make(**schedule.config())
        assert again.config() == schedule.config() and rates(again, 40) == rates(schedule, 40)


def recorded_steps(trainer):
    """The (lr, hyperparameters) each optimizer step of ``trainer`` ran with."""
    seen, update = [], trainer.optimizer.step

    def step(model):
        seen.append((trainer.optimizer.lr, trainer.optimizer.hyper()))
        update(model)
    trainer.optimizer.step = step
    return seen


def test_the_trainer_sets_each_steps_rate_and_momentum_over_the_whole_fit():
    x, y = tiny_data()  # 160 images, batch 16: 10 steps per epoch
    schedule = schedules.OneCycle(cycle_momentum=True)
    trainer = Trainer(tiny_model(), optim.make("adam", lr=0.01, betas=(0.7, 0.9)), batch_size=16, progress=False,
                      schedule=schedule)
    trainer.warmup()  # its step is put back, but it would be recorded
    seen = recorded_steps(trainer)
    trainer.fit(x, y, epochs=3)
    assert trainer.total_steps == 30 and len(seen) == 30
    assert [lr for lr, _ in seen] == pytest.approx([schedule.lr(t, 30, 10, 0.01) for t in range(30)], rel=1e-12)
    assert [h["beta1"] for _, h in seen] == pytest.approx([schedule.momentum(t, 30) for t in range(30)], rel=1e-12)
    assert trainer.optimizer.config()["beta1"] == 0.7  # the configured beta1 is kept (checkpoints compare it)


def test_adam_takes_betas_and_eps():
    adam = optim.make("adam", betas=(0.7, 0.9), eps=1e-6)
    assert (adam.beta1, adam.beta2, adam.eps) == (0.7, 0.9, 1e-6)
    with pytest.raises(ConfigError, match="betas"):
        optim.make("sgd", betas=(0.7, 0.9))
    with pytest.raises(ConfigError, match="beta2"):
        optim.make("adam", betas=(0.7, 1.0))
    with pytest.raises(ConfigError, match="momentum"):
        optim.make("sgd").set_momentum(0.9)


SCHEDULES = [schedules.Constant(), schedules.Step(gamma=0.5, step_size=6), schedules.Cosine(warmup=5),
             schedules.OneCycle(cycle_momentum=True)]


@pytest.mark.parametrize("schedule,extras", [(s, {}) for s in SCHEDULES] + [
    (schedules.OneCycle(), {"label_smoothing": 0.1, "augment": RandomAffine(shift=1, degrees=15)})],
    ids=[s.name for s in SCHEDULES] + ["onecycle-smoothing-augment"])
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path, schedule, extras):
    """Interrupted after step 13 of 30 (mid-epoch, just after a checkpoint), then continued from
    the file alone: every parameter is bit for bit the uninterrupted run's (with augmentation, the
    file keeps its generator: the resumed run warps its images as the uninterrupted one did)."""
    x, y = tiny_data()

    def trainer(path=None, every=None):
        return Trainer(tiny_model(), optim.make("adam", lr=0.01), batch_size=16, seed=5, progress=False,
                       schedule=schedules.make(**schedule.config()), checkpoint_path=path, checkpoint_every=every,
                       **extras)

    whole = trainer()
    whole.fit(x, y, epochs=3)

    interrupted = trainer(tmp_path / "ck.npz", every=13)
    step = interrupted.train_step

    def stop_after_13(xb, yb):
        if interrupted.optimizer.steps == 13:
            raise KeyboardInterrupt
        return step(xb, yb)
    interrupted.train_step = stop_after_13
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(x, y, epochs=3)

    resumed = Trainer.from_checkpoint(tmp_path / "ck.npz", progress=False)
    assert (resumed.epoch, resumed.step, resumed.schedule.config()) == (1, 3, schedule.config())
    assert (resumed.label_smoothing, resumed.augment and resumed.augment.config()) == \
        (extras.get("label_smoothing", 0.0), extras.get("augment") and extras["augment"].config())
    resumed.warmup()
    seen = recorded_steps(resumed)
    resumed.fit(x, y, epochs=2)  # the interrupted epoch counts as one of them
    assert [lr for lr, _ in seen] == pytest.approx([schedule.lr(t, 30, 10, 0.01) for t in range(13, 30)], rel=1e-12)
    a, b = whole.model.state_arrays(), resumed.model.state_arrays()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_checkpoint_from_before_schedules_resumes_its_per_epoch_decay(tmp_path):
    """Files written before schedules kept a per-epoch decay in the optimizer's settings."""
    x, y = tiny_data()
    first = Trainer(tiny_model(), optim.make("sgd", lr=0.1), batch_size=16, progress=False,
                    checkpoint_path=tmp_path / "ck.npz", schedule=schedules.Step(gamma=0.5))
    first.fit(x, y, epochs=1)
    from fastnn.checkpoint import CHECKPOINT_FORMAT, load_arrays, save_arrays
    metadata, arrays = load_arrays(tmp_path / "ck.npz", CHECKPOINT_FORMAT)
    del metadata["trainer"]["schedule"]
    metadata["optimizer"]["lr_decay"] = 0.5
    save_arrays(tmp_path / "old.npz", metadata, arrays)
    resumed = Trainer.from_checkpoint(tmp_path / "old.npz", progress=False)
    assert resumed.schedule.config() == schedules.Step(gamma=0.5).config()
    resumed.fit(x, y, epochs=1)
    assert resumed.optimizer.lr == pytest.approx(0.05)
