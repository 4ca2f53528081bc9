"""RandomAffine: the maps it draws, and the trainer training on warped images with the labels
unchanged, the same images on every backend for a seed. (The warp_affine kernel itself is
checked per backend in tests/backends/test_augment.py.)"""
import numpy as np
import pytest

from fastnn import RandomAffine, backends, optim
from fastnn.errors import ShapeError
from fastnn.train import Trainer

from .conftest import load_or_skip
from .test_hardening_training import tiny_data, tiny_model


def test_no_shift_and_no_rotation_is_the_identity(rng):
    theta = RandomAffine(shift=0, degrees=0).thetas(3, rng, 28, 28)
    np.testing.assert_array_equal(theta, np.tile(np.eye(2, 3, dtype=np.float32), (3, 1, 1)))


def test_each_map_rotates_about_the_centre_then_shifts():
    """Worked out by hand for one image: the source of the output point p is
    R(-a) (p - c - t) + c, so the point c + t samples the centre c, and a point one pixel to the
    right of it samples one pixel along the direction rotated back by a."""
    augment = RandomAffine(shift=2, degrees=10)
    theta = augment.thetas(1, np.random.default_rng(7), 28, 28)[0].astype(np.float64)
    draws = np.random.default_rng(7)  # the same draws: first the angle, then (dx, dy)
    angle, (dx, dy) = np.deg2rad(draws.uniform(-10, 10)), draws.uniform(-2, 2, 2)
    centre = np.array([13.5, 13.5])
    source = lambda p: theta @ np.array([p[0], p[1], 1.0])  # noqa: E731
    np.testing.assert_allclose(source(centre + [dx, dy]), centre, atol=1e-5)
    np.testing.assert_allclose(source(centre + [dx + 1, dy]) - centre, [np.cos(angle), -np.sin(angle)], atol=1e-5)
    assert abs(angle) <= np.deg2rad(10) and max(abs(dx), abs(dy)) <= 2


def test_draws_stay_within_their_limits():
    theta = RandomAffine(shift=3, degrees=20).thetas(2000, np.random.default_rng(0), 28, 28)
    angles = np.degrees(np.arctan2(theta[:, 0, 1], theta[:, 0, 0]))
    assert angles.min() < -19 and angles.max() > 19 and np.abs(angles).max() <= 20 + 1e-4
    np.testing.assert_allclose(np.linalg.det(theta[:, :, :2].astype(np.float64)), 1, atol=1e-5)  # no scaling


@pytest.mark.parametrize("kwargs,message", [({"shift": -1}, "shift must be a number in"),
                                            ({"degrees": 200}, "degrees must be a number in"),
                                            ({"shift": "2"}, "shift must be a number in")])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandomAffine(**kwargs)


def test_flat_input_is_refused_with_the_reason():
    backends.use("numpy")
    with pytest.raises(ShapeError, match=r"expected images \(N, C, H, W\)"):
        RandomAffine()(np.zeros((4, 784), np.float32), np.random.default_rng(0))


def record_steps(backend_name, steps=3):
    """(batch given to train_step, images the model saw, labels the loss saw) for each of the
    ``steps`` steps of an augmented epoch of 16-image batches."""
    K = backends.use(backend_name)
    x, y = tiny_data(n=16 * steps)
    trainer = Trainer(tiny_model(), optim.make("sgd", lr=0.1), batch_size=16, seed=3, progress=False,
                      augment=RandomAffine(shift=1.5, degrees=20))
    trainer.warmup()  # fit's own warm-up step (random images) is not one to record
    given, seen, scored = [], [], []
    step, forward, loss = trainer.train_step, trainer.model.forward, trainer.loss.forward
    trainer.train_step = lambda xb, yb: given.append(np.array(K.to_host(xb))) or step(xb, yb)
    trainer.model.forward = lambda xb, train=False: seen.append(np.array(K.to_host(xb))) or forward(xb, train)
    trainer.loss.forward = lambda logits, yb: scored.append(np.array(K.to_host(yb))) or loss(logits, yb)
    trainer.fit(x, y, epochs=1)
    # one record of each kind per step: zip would quietly drop a step that one of them missed,
    # and an empty list would make both callers' loops check nothing
    assert (len(given), len(seen), len(scored)) == (steps, steps, steps)
    return trainer, list(zip(given, seen, scored)), (x, y)


def test_the_trainer_trains_on_warped_images_and_keeps_their_labels():
    trainer, steps, (x, y) = record_steps("numpy")
    reference = backends.get()
    draws = np.random.default_rng([trainer.seed, 3])  # the trainer's augmentation generator, afresh
    for given, seen, labels in steps:
        want = reference.warp_affine(given, trainer.augment.thetas(len(given), draws, 6, 6))
        np.testing.assert_allclose(seen, want, rtol=1e-6, atol=1e-7)
        assert np.abs(seen - given).max() > 0.1  # really warped
        # the labels are the given images' own: each given image is a training image
        rows = [int(np.flatnonzero((x == image).all(axis=(1, 2, 3)))[0]) for image in given]
        np.testing.assert_array_equal(labels, y[rows])


@pytest.mark.parametrize("name", ["numba", "cython"])  # cuda draws its own, on the device: test_cuda_traffic.py
def test_a_seed_warps_the_same_images_on_every_backend(name):
    load_or_skip(name)
    _, want, _ = record_steps("numpy")
    _, got, _ = record_steps(name)
    for (_, seen_want, labels_want), (_, seen_got, labels_got) in zip(want, got):
        np.testing.assert_allclose(seen_got, seen_want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(labels_got, labels_want)


@pytest.mark.parametrize("kwargs,message", [({"augment": 5}, "augment must be a fastnn.RandomAffine or None"),
                                            ({"schedule": "onecycle"}, "schedule must be a fastnn.schedules"),
                                            ({"label_smoothing": 1.5}, r"smoothing must be a number in \[0, 1\)")])
def test_the_trainer_refuses_a_wrong_augment_schedule_or_smoothing(kwargs, message):
    from fastnn.errors import ConfigError
    with pytest.raises(ConfigError, match=message):
        Trainer(tiny_model(), optim.make("sgd"), **kwargs)
