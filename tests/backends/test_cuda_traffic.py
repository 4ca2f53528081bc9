"""The CUDA backend on a GPU's terms, checked in the simulator (or on a GPU, where there is one).

* What a training step moves between host and device, both ways, and what it allocates:
  after the first steps, nothing but the scheduled read-back of the losses.
* Randomness drawn on the device (xoroshiro128p): permutations, dropout masks, augmentation,
  and a checkpointed run that resumes exactly.
* The reductions, the GEMM, the transpose and the grid-stride kernels at the launch sizes a
  GPU uses (the simulator runs smaller blocks, see arrays.py and dense.py).
* One full training step of every named model, at batch 2, against the numpy reference.
"""
import numpy as np
import pytest

from fastnn import backends, models, optim
from fastnn.augment import RandomAffine
from fastnn.errors import TrainingDivergedError
from fastnn.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from fastnn.model import Sequential
from fastnn.train import Trainer

from ..conftest import SIMULATED_CUDA, load_or_skip
from .transfers import count_transfers


@pytest.fixture
def K():
    load_or_skip("cuda")
    return backends.use("cuda")   # the Trainer's backend too (conftest puts the previous one back)


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------ the traffic counter

@pytest.fixture
def traffic(K, monkeypatch):
    """What crosses between host and device, and the device allocations, from now on
    (tests/backends/transfers.py)."""
    return count_transfers(K, monkeypatch)


def test_the_counter_sees_every_way(K, traffic):
    from fastnn.backends.cuda.arrays import fill_kernel
    a = K.to_device(np.ones(3, np.float32))
    a.copy_to_device(np.zeros(3, np.float32))
    host = np.zeros(5, np.float32)
    fill_kernel[1, 32](host, np.float32(1))  # Numba copies it over (and back)
    K.to_host(a)
    assert traffic["up"] == [3, 3, 5] and traffic["down"][-1] == 3   # (Numba copied the 5 back first)
    assert traffic["allocations"][0] == 3   # to_device's


# ----------------------------------------------------------------------------------- the pool

def test_the_pool_hands_out_an_array_again_only_when_nobody_holds_it(K):
    from fastnn.backends.cuda.arrays import empty, fill_kernel, flat, pool_stats
    a = K.zeros((3, 5))
    b = empty((3, 5))
    assert a is not b                        # both held
    view = a.reshape(15)
    del a
    c = empty((3, 5))
    fill_kernel[1, 32](flat(c), np.float32(1))
    assert c is not b and not K.to_host(view).any()   # a's memory, seen through the view, is not c's
    made = pool_stats()["allocations"]
    del view, c
    d = empty((3, 5))                        # now an idle one comes back: no allocation
    assert pool_stats()["allocations"] == made
    piece = b[1:2]                           # a slice holds its array too
    del b, d
    e, f = empty((3, 5)), empty((3, 5))
    assert pool_stats()["allocations"] == made and piece.shape == (1, 5)
    del e, f


# ----------------------------------------------------------------- a training step's traffic

def tiny_net(dropout=0.25):
    rng = np.random.default_rng(0)
    layers = [Conv2D(1, 2, 3, pad=1, rng=rng), ReLU(), BatchNorm(2), MaxPool2D(2), Flatten(),
              Dropout(dropout), Dense(2 * 3 * 3, 5, rng=rng)]
    return Sequential(layers, (1, 6, 6), name="tiny-cnn")


def small_net(dropout=0.0):
    """Flatten -> Dense -> ReLU -> Dropout -> Dense: a cheap net with a dropout layer (the simulator is slow)."""
    rng = np.random.default_rng(0)
    return Sequential([Flatten(), Dense(36, 8, rng=rng), ReLU(), Dropout(dropout), Dense(8, 5, rng=rng)],
                      (1, 6, 6), name="small")


def tiny_data(n=16, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 6, 6), dtype=np.float32), rng.integers(0, 5, n)


def no_warmup(trainer):
    """Skip fit's warm-up step (it compiles kernels, and puts everything back as it was)."""
    trainer.compile_seconds = 0.0
    return trainer


def test_training_steps_copy_only_the_scheduled_losses_and_allocate_nothing(K, traffic, monkeypatch):
    """conv, ReLU, batchnorm, max-pool, dropout, dense, augmentation and Adam: after the first two
    steps (which fill the pool: a layer keeps its output until the next step's replaces it) a step
    allocates nothing and copies nothing either way, except the losses, read every 2 steps here."""
    from fastnn.backends.cuda.loss import LossLog
    monkeypatch.setattr(LossLog, "READBACK_STEPS", 2)
    x, y = tiny_data(12)
    trainer = no_warmup(Trainer(tiny_net(), optim.make("adam", lr=0.01), batch_size=2, seed=0, progress=False,
                                finite_check_every=None, augment=RandomAffine(shift=1, degrees=10)))
    marks = []   # the counts at the start of each step, and at the end of the epoch's steps

    def mark():
        marks.append({kind: len(sizes) for kind, sizes in traffic.items()})

    step, epoch = trainer.logged_step, trainer.train_epoch
    monkeypatch.setattr(trainer, "logged_step", lambda xb, yb: mark() or step(xb, yb))
    monkeypatch.setattr(trainer, "train_epoch", lambda *args: (epoch(*args), mark())[0])
    trainer.fit(x, y, epochs=1)
    assert len(marks) == 7   # 6 steps, then the epoch's end

    def between(i, j, kind):
        return traffic[kind][marks[i][kind]:marks[j][kind]]

    per_step = [{kind: between(i, i + 1, kind) for kind in traffic} for i in range(6)]
    print("per step (elements up, down, allocated):", per_step)
    for i, moved in enumerate(per_step):
        assert moved["up"] == [], f"step {i + 1} uploaded {moved['up']}"
        # the losses of 2 steps come back after steps 2, 4 and 6 (that one at the epoch's end)
        assert moved["down"] == ([2] if (i + 1) % 2 == 0 else []), f"step {i + 1}"
    for i, moved in enumerate(per_step[2:], start=3):
        assert moved["allocations"] == [], f"step {i} allocated {moved['allocations']}"
    assert trainer.history[0]["train_loss"] > 0 and np.isfinite(trainer.history[0]["train_loss"])


def test_the_evaluation_set_is_uploaded_once_per_fit(K, traffic, monkeypatch):
    x, y = tiny_data(8)
    trainer = no_warmup(Trainer(small_net(), optim.make("sgd", lr=0.1), batch_size=4, progress=False,
                                eval_batch_size=4))
    before = len(traffic["up"])
    trainer.fit(x, y, epochs=2, test=(x[:6], y[:6]), eval_every=1)   # 4 steps, 4 + 2 evaluations
    ups = traffic["up"][before:]
    assert sorted(ups) == sorted([x.size, y.size, 6 * 36, 6])   # the training set and the test set, once
    assert len(trainer.evaluations) == 4


def test_the_finite_check_reads_one_flag_per_array(K, traffic):
    trainer = Trainer(tiny_net(), optim.make("sgd", lr=0.1), progress=False)
    arrays = list(trainer.model._arrays())   # conv W, b; batchnorm gamma, beta and its two buffers; dense W, b
    before = len(traffic["down"])
    trainer.check_parameters()
    assert traffic["down"][before:] == [len(arrays)]
    key, table, name = arrays[3]
    poisoned = K.to_host(table[name])
    poisoned[0] = np.inf
    table[name] = K.to_device(poisoned)
    with pytest.raises(TrainingDivergedError, match=key.split("/")[1].replace(".", r"\.")):
        trainer.check_parameters()


# ------------------------------------------------------------------- divergence on read-back

@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_nan_loss_found_at_read_back_names_its_step_and_keeps_the_last_checkpoint(K, tmp_path):
    """The losses come back every few steps, and always before a checkpoint is written: a NaN among
    them stops the run before the write, naming its step, and the last good checkpoint stays."""
    from fastnn.checkpoint import CHECKPOINT_FORMAT, load_arrays
    x, y = tiny_data(8)
    path = tmp_path / "ck.npz"
    trainer = no_warmup(Trainer(small_net(), optim.make("sgd", lr=0.1), batch_size=2, progress=False,
                                checkpoint_path=path, checkpoint_every=3, finite_check_every=None))
    trainer.fit(x, y, epochs=1)   # checkpoints after steps 3 and 4
    good = path.read_bytes()
    trainer.optimizer.base_lr = 1e30   # the next steps overflow
    with pytest.raises(TrainingDivergedError) as info:
        trainer.fit(x, y, epochs=1)   # its losses are read after step 6, before that checkpoint
    message = str(info.value)
    assert "the loss became" in message and "read back after step 6" in message
    assert "learning rate" in message and "smaller --lr" in message
    assert "ck.npz (after 1 epochs and 0 steps), is kept as it was" in message
    assert path.read_bytes() == good
    _, arrays = load_arrays(path, CHECKPOINT_FORMAT)
    assert all(np.isfinite(a).all() for a in arrays.values())


# ------------------------------------------------------------------- randomness on the device

def test_the_generator_draws_permutations_masks_and_maps(K):
    g = K.Generator([5, 1])
    state = g.bit_generator.state
    order = K.to_host(g.permutation(40))
    assert sorted(order) == list(range(40)) and list(order) != list(range(40))
    mask = K.to_host(g.dropout_mask((3, 50), 0.25))
    assert set(np.unique(mask)) <= {0.0, np.float32(1 / 0.75)} and 0.6 < (mask > 0).mean() < 0.9
    theta = K.to_host(g.random_affine(6, 2.0, 10.0, 28, 28))
    angle = np.degrees(np.arctan2(theta[:, 0, 1], theta[:, 0, 0]))   # theta = [R(-angle) | offset]
    assert np.all(np.abs(angle) <= 10.0001) and np.allclose(theta[:, 0, 0], theta[:, 1, 1])
    centre = np.array([13.5, 13.5])
    shift = np.linalg.solve(theta[:, :, :2], (centre - theta[:, :, 2])[..., None])[..., 0] - centre
    assert np.all(np.abs(shift) <= 2.0001)
    # its state, as NumPy's: set back, it draws the same again; the same seed, the same numbers
    g.bit_generator.state = state
    np.testing.assert_array_equal(K.to_host(g.permutation(40)), order)
    np.testing.assert_array_equal(K.to_host(K.Generator([5, 1]).permutation(40)), order)
    assert list(K.to_host(K.Generator([6, 1]).permutation(40))) != list(order)
    with pytest.raises(ValueError, match="xoroshiro128p.*PCG64"):
        g.bit_generator.state = np.random.default_rng(0).bit_generator.state


def test_draws_do_not_depend_on_the_launch_size(K, monkeypatch):
    """Element i comes from stream i % streams, whatever the block size."""
    from fastnn.backends.cuda import arrays
    masks = []
    for threads in (arrays.THREADS, 1):
        monkeypatch.setattr(arrays, "THREADS", threads)
        masks.append(K.to_host(K.Generator(3).dropout_mask((2, 40), 0.5)))
    np.testing.assert_array_equal(masks[0], masks[1])


def test_the_trainer_warps_its_batches_with_maps_drawn_on_the_device(K, monkeypatch):
    x, y = tiny_data(4)
    trainer = no_warmup(Trainer(small_net(), optim.make("sgd", lr=0.1), batch_size=4, seed=3, progress=False,
                                augment=RandomAffine(shift=1.5, degrees=20)))
    state = trainer.augment_rng.bit_generator.state
    seen = []
    forward = trainer.model.forward
    monkeypatch.setattr(trainer.model, "forward", lambda xb, train=False: seen.append(K.to_host(xb)) or forward(xb, train))
    given = []
    gather = K.gather
    monkeypatch.setattr(K, "gather", lambda a, idx: given.append(K.to_host(gather(a, idx))) or gather(a, idx))
    trainer.fit(x, y, epochs=1)
    replay = K.Generator(0)
    replay.bit_generator.state = state
    want = K.to_host(K.warp_affine(K.to_device(given[0]), replay.random_affine(4, 1.5, 20, 6, 6)))
    np.testing.assert_array_equal(seen[0], want)
    assert np.abs(seen[0] - given[0]).max() > 0.1


def test_a_checkpointed_run_resumes_exactly(K, tmp_path, monkeypatch):
    """Dropout, augmentation and shuffles drawn on the device; a run stopped after its checkpoint at
    step 6 (mid-epoch 2) and resumed ends with exactly the uninterrupted run's parameters and losses."""
    x, y = tiny_data(8)

    def trainer(path=None):
        return no_warmup(Trainer(small_net(0.5), optim.make("adam", lr=0.01), batch_size=2, seed=4,
                                 progress=False, augment=RandomAffine(shift=1, degrees=15), checkpoint_path=path,
                                 checkpoint_every=3 if path else None, finite_check_every=None))

    whole = trainer()
    whole.fit(x, y, epochs=2)

    class Stop(Exception):
        pass

    path = tmp_path / "ck.npz"
    broken = trainer(path)
    write = broken.checkpoint

    def checkpoint_then_stop(path=None):
        out = write(path)
        if broken.optimizer.steps == 6:
            raise Stop
        return out
    monkeypatch.setattr(broken, "checkpoint", checkpoint_then_stop)
    with pytest.raises(Stop):
        broken.fit(x, y, epochs=2)
    resumed = no_warmup(Trainer.from_checkpoint(path, progress=False))
    assert isinstance(resumed.model.rng, K.Generator) and resumed.step == 2
    resumed.fit(x, y, epochs=1)   # finishes epoch 2
    assert resumed.history[-1]["train_loss"] == whole.history[-1]["train_loss"]
    for key, value in whole.model.state_arrays().items():
        np.testing.assert_array_equal(resumed.model.state_arrays()[key], value, err_msg=key)


# -------------------------------------------------------------- the GPU's launch sizes

@pytest.fixture
def gpu_sizes(K, monkeypatch):
    """The launch sizes of a GPU run (arrays.py, dense.py, conv.py, the reductions' 256 threads)."""
    from fastnn.backends.cuda import arrays, conv, dense, loss, norm
    for module in (arrays, loss, norm):
        monkeypatch.setattr(module, "REDUCE_THREADS", 256)
    monkeypatch.setattr(arrays, "THREADS", 256)
    monkeypatch.setattr(arrays, "GRID_LIMIT", 4096)
    for name, value in {"BM": 64, "BN": 64, "BK": 16, "BM_PAD": 65, "BN_PAD": 65, "GEMM_GRID_LIMIT": 65535,
                        "COL_THREADS": 32, "ROW_THREADS": 8}.items():
        monkeypatch.setattr(dense, name, value)
    monkeypatch.setattr(conv, "TT", 32)
    monkeypatch.setattr(conv, "TT_ROWS", 8)
    monkeypatch.setattr(conv, "GEMM_GRID_LIMIT", 65535)


@pytest.mark.skipif(not SIMULATED_CUDA, reason="a GPU runs its own sizes everywhere")
def test_reductions_at_the_gpu_block_size(K, rng, gpu_sizes):
    """Every block_sum user with 256 threads per block, over more rows (or elements) than threads."""
    reference = backends.load("numpy")
    logits, labels = 3 * randn(rng, 300, 4), rng.integers(0, 4, 300)
    got, _ = K.softmax_cross_entropy(K.to_device(logits), K.to_device(labels), 0.1)
    assert got == pytest.approx(reference.softmax_cross_entropy(logits, labels, 0.1)[0], rel=1e-5)
    log = K.LossLog(2)
    log.add(K.to_device(logits), K.to_device(labels))
    assert log.read()[0] == pytest.approx(reference.softmax_cross_entropy(logits, labels)[0], rel=1e-5)
    assert K.count_correct(K.to_device(logits), K.to_device(labels)) == reference.count_correct(logits, labels)
    t = randn(rng, 300, 4)
    got, _ = K.mse_loss(K.to_device(logits), K.to_device(t))
    assert got == pytest.approx(reference.mse_loss(logits, t)[0], rel=1e-5)
    x, dy = randn(rng, 9, 3, 6, 6), randn(rng, 9, 3, 6, 6)   # 324 values per channel
    gamma, beta = 1 + randn(rng, 3), randn(rng, 3)
    want = reference.batchnorm_forward(x, gamma, beta, 1e-5)
    got = K.batchnorm_forward(K.to_device(x), K.to_device(gamma), K.to_device(beta), 1e-5)
    for w, g in zip(want[:3], got[:3]):
        np.testing.assert_allclose(K.to_host(g), w, rtol=1e-4, atol=1e-5)
    for w, g in zip(reference.batchnorm_backward(dy, want[3]), K.batchnorm_backward(K.to_device(dy), got[3])):
        np.testing.assert_allclose(K.to_host(g), w, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not SIMULATED_CUDA, reason="a GPU runs its own sizes everywhere")
def test_gemm_transpose_and_element_wise_kernels_at_the_gpu_sizes(K, rng, gpu_sizes):
    from fastnn.backends.cuda import conv, dense
    m, k, n = 65, 40, 3    # two row tiles of 64, one column tile, three steps of 16 in K (both buffers)
    for trans_a in (False, True):
        for trans_b in (False, True):
            a = randn(rng, k, m) if trans_a else randn(rng, m, k)
            b = randn(rng, n, k) if trans_b else randn(rng, k, n)
            bias = randn(rng, n)
            want = (a.T if trans_a else a) @ (b.T if trans_b else b) + bias
            got = dense.matmul(K.to_device(a), K.to_device(b), trans_a, trans_b, bias=K.to_device(bias))
            np.testing.assert_allclose(K.to_host(got), want, rtol=2e-4, atol=1e-4, err_msg=f"{trans_a} {trans_b}")
    a = randn(rng, 40, 33)
    np.testing.assert_allclose(K.to_host(dense.column_sums(K.to_device(a))), a.sum(0), rtol=1e-4, atol=1e-4)
    x = randn(rng, 1, 40, 20)   # two tiles of 32 x 32
    np.testing.assert_array_equal(K.to_host(conv.transpose(K.to_device(x))), x.transpose(0, 2, 1))
    x = randn(rng, 3, 200)   # 600 elements: three blocks of 256
    np.testing.assert_array_equal(K.to_host(K.relu_forward(K.to_device(x))), np.maximum(x, 0))


# ------------------------------------------------------- every named model: one full step

def one_step(backend, name, batch, seed=0):
    """One Trainer.train_step of the named model with SGD at ``batch``: (loss, gradients, state).
    Dropout masks come from the same NumPy generator on both backends."""
    K = backends.use(backend)
    model = models.build(name, seed=seed)
    trainer = Trainer(model, optim.make("sgd", lr=0.1), batch_size=batch, seed=seed, progress=False)
    model.set_rng(np.random.default_rng([seed, 2]))
    rng = np.random.default_rng(seed + 1)
    x = rng.random((batch,) + models.MNIST_SHAPE, dtype=np.float32)
    y = rng.integers(0, 10, batch)
    loss = trainer.train_step(x, y)
    grads = {key: K.to_host(g) for key, _, g in model.param_items()}
    return loss, grads, model.state_arrays()


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_a_full_step_of_every_named_model_matches_the_reference(K, name):
    loss, grads, state = one_step("cuda", name, 2)
    want_loss, want_grads, want_state = one_step("numpy", name, 2)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    for key, want in want_grads.items():
        scale = np.abs(want).max() + 1e-12
        np.testing.assert_allclose(grads[key], want, rtol=1e-3, atol=1e-4 * scale, err_msg=key)
    for key, want in want_state.items():
        np.testing.assert_allclose(state[key], want, rtol=1e-4, atol=1e-5, err_msg=key)
