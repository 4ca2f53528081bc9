"""The CUDA backend beyond kernel agreement: its error without a GPU, data residency,
host arrays refused, and a training step that matches the numpy backend's.

On a machine without a GPU these run in Numba's CUDA simulator (tests/conftest.py turns
it on). The simulator's arrays wrap NumPy arrays and quietly accept NumPy operations that
a real device array refuses; ``strict_device_arrays`` takes that leniency away, so
"no NumPy on device arrays" is checked here too.
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from numba import float32

from fastnn import backends, optim
from fastnn.errors import ShapeError
from fastnn.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from fastnn.model import Sequential

from ..conftest import SIMULATED_CUDA, load_or_skip
from .transfers import count_transfers

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def K():
    return load_or_skip("cuda")


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------- no GPU, no simulator

def _import_in_subprocess(prelude=""):
    """Load the cuda backend in a fresh interpreter without the simulator; what it says."""
    script = prelude + (
        "import json\n"
        "from fastnn import backends\n"
        "from fastnn.errors import BackendUnavailableError\n"
        "reason = backends.available()['cuda']\n"
        "try:\n"
        "    backends.use('cuda')\n"
        "    print(json.dumps({'loaded': True}))\n"
        "except BackendUnavailableError as e:\n"
        "    print(json.dumps({'loaded': False, 'reason': reason, 'message': str(e),\n"
        "                      'cause': repr(e.__cause__)}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "FASTNN_BACKEND")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not SIMULATED_CUDA, reason="this machine has a GPU: the backend loads")
def test_without_gpu_or_simulator_the_error_says_what_to_do():
    out = _import_in_subprocess()
    assert out["loaded"] is False
    message = out["message"]
    assert out["reason"] == message  # available() reports the same reason
    for needed in ("NVIDIA GPU", "FASTNN_BACKEND=numba", "FASTNN_BACKEND=cython", "NUMBA_ENABLE_CUDASIM=1"):
        assert needed in message
    assert out["cause"] != "None"  # chained to the driver's error


def test_without_numba_cuda_the_error_names_the_install_command():
    # numba.cuda made unimportable, as when the numba-cuda package is missing
    out = _import_in_subprocess("import sys\nsys.modules['numba.cuda'] = None\n")
    assert out["loaded"] is False
    assert 'pip install -e ".[cuda]"' in out["message"]
    assert "FASTNN_BACKEND=numba" in out["message"]
    assert "ImportError" in out["cause"] or "ModuleNotFoundError" in out["cause"]


# ------------------------------------------------------------------------ arrays and launch

def test_to_device_makes_float32_and_int64(K, rng):
    x = K.to_device(rng.standard_normal((3, 4)))          # float64 in
    assert x.dtype == np.float32
    assert K.to_device(x) is x                             # already on the device
    labels = K.to_device(np.arange(5, dtype=np.int32))
    assert labels.dtype == np.int64
    with pytest.raises(ShapeError, match="float or integer"):
        K.to_device(np.ones(3, dtype=bool))
    z = K.zeros((2, 3), dtype=np.int64)
    assert z.dtype == np.int64 and not K.to_host(z).any()


def test_host_arrays_are_refused_with_the_fix(K, rng):
    x, W, b = randn(rng, 2, 3), randn(rng, 3, 4), randn(rng, 4)
    with pytest.raises(ShapeError, match=r"dense_forward got a ndarray for 'x'.*K\.to_device"):
        K.dense_forward(x, K.to_device(W), K.to_device(b))
    with pytest.raises(ShapeError, match="sgd_update"):
        K.sgd_update(K.to_device(W), W, 0.1)


def test_gather_checks_and_wraps_indices(K, rng):
    x = randn(rng, 6, 2, 3)
    got = K.to_host(K.gather(K.to_device(x), np.array([5, -1, 0])))
    np.testing.assert_array_equal(got, x[[5, -1, 0]])
    with pytest.raises(IndexError):
        K.gather(K.to_device(x), np.array([6]))


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_across_tile_edges(K, rng, trans_a, trans_b):
    from fastnn.backends.cuda.dense import BK, BM, GEMM_GRID_LIMIT, matmul
    # a partial tile in M, more tiles than blocks (they loop), exactly two steps of K (both buffers)
    m, k, n = BM * (GEMM_GRID_LIMIT + 1) + 1, 2 * BK, 3
    a = randn(rng, k, m) if trans_a else randn(rng, m, k)
    b = randn(rng, n, k) if trans_b else randn(rng, k, n)
    want = (a.T if trans_a else a) @ (b.T if trans_b else b)
    got = K.to_host(matmul(K.to_device(a), K.to_device(b), trans_a=trans_a, trans_b=trans_b))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * np.sqrt(k))


@pytest.mark.parametrize("trans_a,with_bias", [(True, False), (False, True)])
def test_matmul_split_k(K, rng, monkeypatch, trans_a, with_bias):
    # a long K over few output tiles is cut into slices whose products are summed: make "long" short
    from fastnn.backends.cuda import dense
    monkeypatch.setattr(dense, "SPLIT_K_MIN", 16)
    monkeypatch.setattr(dense, "SPLIT_K_TILES", 8)
    m, k, n = 3, 70, 5         # slices of 32, 32 and 6
    a = randn(rng, k, m) if trans_a else randn(rng, m, k)
    b, bias = randn(rng, k, n), randn(rng, n)
    want = (a.T if trans_a else a) @ b + (bias if with_bias else 0)
    got = dense.matmul(K.to_device(a), K.to_device(b), trans_a=trans_a,
                       bias=K.to_device(bias) if with_bias else None)
    np.testing.assert_allclose(K.to_host(got), want, rtol=2e-4, atol=2e-5 * np.sqrt(k))


def test_column_sums_in_chunks(K, rng, monkeypatch):
    # long columns are summed by several blocks, then their sums summed: make "long" short here
    from fastnn.backends.cuda import dense
    monkeypatch.setattr(dense, "CHUNK_ROWS", 8)
    a = randn(rng, 20, 33)   # 3 chunks, then 1; 33 columns cross a 32-column block
    got = K.to_host(dense.column_sums(K.to_device(a)))
    np.testing.assert_allclose(got, a.sum(axis=0), rtol=2e-4, atol=2e-5 * np.sqrt(20))


@pytest.mark.skipif(not SIMULATED_CUDA, reason="a GPU already runs the full block size")
def test_reductions_with_the_gpu_block_size(K, rng, monkeypatch):
    # The simulator runs the reductions with REDUCE_THREADS = 32 (fewer synchronisations);
    # run the loss and the count once with the GPU's 256 threads, over more rows than threads.
    from fastnn.backends.cuda import loss
    monkeypatch.setattr(loss, "REDUCE_THREADS", 256)
    logits, labels = 3 * randn(rng, 300, 4), rng.integers(0, 4, 300)
    reference = backends.load("numpy")
    got, _ = K.softmax_cross_entropy(K.to_device(logits), K.to_device(labels))
    assert got == pytest.approx(reference.softmax_cross_entropy(logits, labels)[0], rel=1e-5)
    assert K.count_correct(K.to_device(logits), K.to_device(labels)) == reference.count_correct(logits, labels)


def test_synchronize_waits_for_the_kernels_launched(K, monkeypatch):
    """Kernels launch asynchronously on a GPU: benchmarks end a step's time with K.synchronize()."""
    from numba import cuda
    if SIMULATED_CUDA:
        # the simulator runs a launch to its end before returning: all synchronize can do is ask
        # the device to wait, as on a GPU
        waits = []
        monkeypatch.setattr(cuda, "synchronize", lambda: waits.append("device"))
        K.synchronize()
        assert waits == ["device"]
        return

    @cuda.jit
    def spin(out, n):
        # out[0] = the n-th term of a -> a / 2 + 1 from 0: a dependent chain, about a second of one GPU thread
        a = float32(0.0)
        for _ in range(n):
            a = a * float32(0.5) + float32(1.0)
        out[0] = a

    out = K.zeros(1)
    spin[1, 1](out, 400_000_000)   # compiled on the host first, then launched; returns at once
    done = cuda.event(timing=False)
    done.record()                  # completes when every kernel launched before it has
    assert not done.query(), "the kernel finished before its launch returned: make it longer"
    K.synchronize()
    assert done.query()
    assert K.to_host(out)[0] == 2.0


# ---------------------------------------------------------------------------- data residency

_DEVICE_ARRAY_ATTRIBUTES = {"size", "dtype", "ndim", "strides", "itemsize", "nbytes", "flags"}


@pytest.fixture
def copy_log(K, monkeypatch):
    """A log of every copy between host and device, in either direction: {"to_host": [sizes],
    "to_device": [sizes]}, from tests/backends/transfers.py's counter (uploads include host arrays
    handed straight to a kernel launch, which Numba copies over and back on its own)."""
    log = count_transfers(K, monkeypatch)
    yield {"to_host": log["down"], "to_device": log["up"]}


@pytest.fixture
def strict_device_arrays(K, monkeypatch, copy_log):
    """Device arrays that refuse NumPy, as real ones do, and the copy log (yielded)."""
    cls = type(K.zeros(1))
    if SIMULATED_CUDA:  # the simulator's array forwards everything else to its NumPy array
        original_getattr = cls.__getattr__

        def getattr_(self, name):
            # the simulator's own code (its copy_to_device, say) may use NumPy on what it wraps
            if name not in _DEVICE_ARRAY_ATTRIBUTES and "numba" not in sys._getframe(1).f_code.co_filename:
                raise AttributeError(f"a device array has no {name!r} (NumPy used on a device array?)")
            return original_getattr(self, name)

        def refuse(self, *args):
            raise TypeError("arithmetic on a device array (NumPy used on a device array?)")

        monkeypatch.setattr(cls, "__getattr__", getattr_)
        for op in ("__add__", "__sub__", "__mul__", "__truediv__", "__floordiv__", "__mod__", "__pow__",
                   "__lt__", "__le__", "__gt__", "__ge__"):
            monkeypatch.setattr(cls, op, refuse)
    yield copy_log


def _kernel_step(K, arrays, rng):
    """conv -> relu -> batchnorm -> max-pool -> flatten -> dropout -> dense -> loss, backward, Adam.

    ``arrays`` (host) are moved to K's memory; returns (loss, correct, updated host arrays, device
    arrays seen along the way).
    """
    d = {name: K.to_device(a) for name, a in arrays.items()}
    seen = []

    def keep(*xs):
        seen.extend(x for x in xs if x is not None)
        return xs[0] if len(xs) == 1 else xs

    x, labels = d.pop("x"), d.pop("labels")
    y1, conv_cache = K.conv2d_forward(x, d["conv.W"], d["conv.b"], 1, 1)
    y2 = keep(K.relu_forward(y1))
    y3, mean, var, bn_cache = K.batchnorm_forward(y2, d["bn.gamma"], d["bn.beta"], 1e-5)
    K.running_average_update(d["bn.mean"], mean, 0.9)
    y4, pool_cache = K.maxpool2d_forward(y3, 2, 2, 0)
    flat = y4.reshape(y4.shape[0], int(np.prod(y4.shape[1:])))
    mask = keep(K.dropout_mask(tuple(flat.shape), 0.25, rng))
    y5 = keep(K.dropout_forward(flat, mask))
    logits = keep(K.dense_forward(y5, d["fc.W"], d["fc.b"]))
    loss, loss_cache = K.softmax_cross_entropy(logits, labels)
    correct = K.count_correct(logits, labels)
    dlogits = keep(K.softmax_cross_entropy_backward(loss_cache))
    dy5, dW_fc, db_fc = keep(*K.dense_backward(dlogits, y5, d["fc.W"]))
    dflat = keep(K.dropout_backward(dy5, mask))
    dy3 = keep(K.maxpool2d_backward(dflat.reshape(y4.shape), pool_cache))
    dy2, dgamma, dbeta = keep(*K.batchnorm_backward(dy3, bn_cache))
    dy1 = keep(K.relu_backward(dy2, y2))
    dx, dW_conv, db_conv = K.conv2d_backward(dy1, conv_cache, need_dx=False)
    assert dx is None
    keep(y1, y2, y4, mean, var, dW_conv, db_conv)
    grads = {"conv.W": dW_conv, "conv.b": db_conv, "bn.gamma": dgamma, "bn.beta": dbeta,
             "fc.W": dW_fc, "fc.b": db_fc}
    for name, grad in grads.items():
        m, v = K.zeros(grad.shape), K.zeros(grad.shape)
        K.adam_update(d[name], grad, m, v, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, step=1,
                      weight_decay=0.01)
    return loss, correct, d, seen


def _step_arrays(rng):
    return {"x": randn(rng, 2, 1, 6, 6), "labels": rng.integers(0, 5, 2),
            "conv.W": randn(rng, 2, 1, 3, 3), "conv.b": randn(rng, 2),
            "bn.gamma": 1 + 0.1 * randn(rng, 2), "bn.beta": randn(rng, 2), "bn.mean": np.zeros(2, np.float32),
            "fc.W": randn(rng, 18, 5), "fc.b": randn(rng, 5)}


def test_a_training_step_stays_on_the_device(K, strict_device_arrays):
    from fastnn.backends.cuda.arrays import is_device
    arrays = _step_arrays(np.random.default_rng(7))
    loss, correct, params, seen = _kernel_step(K, arrays, np.random.default_rng(3))
    assert type(loss) is float and type(correct) is int
    assert strict_device_arrays["to_host"] == [1, 1]  # the loss and the count: one element each, nothing else
    # up: the step's inputs, and the dropout mask, which is drawn on the host (the only upload inside the step)
    mask_size = 2 * 18
    assert sorted(strict_device_arrays["to_device"]) == sorted([a.size for a in arrays.values()] + [mask_size])
    assert all(is_device(a) for a in seen) and all(is_device(p) for p in params.values())
    # and it is the numpy backend's step
    want_loss, want_correct, want, _ = _kernel_step(backends.load("numpy"), arrays, np.random.default_rng(3))
    assert loss == pytest.approx(want_loss, rel=1e-5) and correct == want_correct
    for name, value in want.items():
        np.testing.assert_allclose(K.to_host(params[name]), value, rtol=1e-4, atol=1e-5, err_msg=name)


# ------------------------------------------------------------------ the library's training step

def _tiny_cnn():
    rng = np.random.default_rng(0)
    layers = [Conv2D(1, 2, 3, pad=1, rng=rng), ReLU(), BatchNorm(2), MaxPool2D(2), Flatten(),
              Dropout(0.25), Dense(2 * 3 * 3, 5, rng=rng)]
    return Sequential(layers, (1, 6, 6), name="tiny-cnn")


def _train_two_steps(name, x, y, copies=None):
    """Two Trainer.train_step calls on ``name``; (losses, host state, sizes copied each way meanwhile)."""
    from fastnn.train import Trainer
    K = backends.use(name)
    model = _tiny_cnn()
    trainer = Trainer(model, optim.make("adam", lr=0.01, weight_decay=0.01), batch_size=len(x), seed=0,
                      progress=False)
    model.set_rng(np.random.default_rng([0, 2]))  # the numpy trainer's: the same masks (cuda's own: test_cuda_traffic)
    xb, yb = K.to_device(x), K.to_device(y)
    before = {way: len(sizes) for way, sizes in copies.items()} if copies is not None else {}
    losses = [trainer.train_step(xb, yb) for _ in range(2)]
    during = {way: sizes[before[way]:] for way, sizes in copies.items()} if copies is not None else {}
    return losses, model.state_arrays(), during


def test_trainer_step_matches_the_numpy_backend(K, rng, strict_device_arrays):
    """Sequential + layers + Adam through Trainer.train_step: a simple-cnn in miniature
    (simple-cnn itself takes minutes per step in the simulator)."""
    x, y = rng.random((2, 1, 6, 6), dtype=np.float32), rng.integers(0, 5, 2)
    losses, state, copies = _train_two_steps("cuda", x, y, strict_device_arrays)
    assert copies["to_host"] == [1, 1]  # one scalar loss per step, nothing else came back
    # nothing went up but the dropout masks, one per step (drawn on the host by NumPy's generator)
    assert copies["to_device"] == [2 * 18, 2 * 18]
    assert all(type(loss) is float for loss in losses)
    want_losses, want_state, _ = _train_two_steps("numpy", x, y)
    assert losses == pytest.approx(want_losses, rel=1e-5)
    assert state.keys() == want_state.keys()
    for key in want_state:
        np.testing.assert_allclose(state[key], want_state[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_the_copy_log_sees_every_way_up(K, copy_log):
    """The log is not blind: an explicit upload and a host array handed to a kernel both count."""
    from fastnn.backends.cuda.arrays import fill_kernel
    K.to_device(np.ones(3, np.float32))
    host = np.zeros(5, np.float32)
    fill_kernel[1, 32](host, np.float32(1))  # Numba copies it over, and back
    assert copy_log["to_device"] == [3, 5] and host.sum() == 5


@pytest.mark.skipif(not SIMULATED_CUDA, reason="real device arrays refuse NumPy by themselves")
def test_strict_simulator_arrays_refuse_numpy(K, strict_device_arrays):
    a = K.to_device(np.ones((2, 3), np.float32))
    with pytest.raises(AttributeError, match="NumPy used on a device array"):
        a.sum()
    with pytest.raises(TypeError, match="NumPy used on a device array"):
        a * 2
    assert a.reshape(6).shape == (6,) and a.dtype == np.float32 and a.size == 6


def _fit(name, x, y, orders):
    """Trainer.fit on ``name``, 2 epochs of 2 batches, the 6 test images in batches of 4 and 2;
    ``orders``: the epochs' permutations, drawn and recorded (cuda: by the device generator) when
    empty, replayed otherwise (the backends' generators differ)."""
    from fastnn.train import Trainer
    K = backends.use(name)
    model = Sequential([Flatten(), Dense(16, 8, rng=np.random.default_rng(0)), ReLU(),
                        Dense(8, 5, rng=np.random.default_rng(1))], (1, 4, 4), name="tiny-mlp")
    trainer = Trainer(model, optim.make("sgd", lr=0.5), batch_size=4, seed=0, progress=False, eval_batch_size=4)
    if orders:
        replay = iter(orders)
        trainer.shuffle_rng = SimpleNamespace(permutation=lambda n: next(replay),
                                              bit_generator=SimpleNamespace(state=None))
    else:
        draw = trainer.shuffle_rng.permutation

        def record(n):
            order = draw(n)
            orders.append(K.to_host(order))
            return order
        trainer.shuffle_rng.permutation = record
    return trainer.fit(x, y, epochs=2, test=(x[:6], y[:6])), model


def test_trainer_fit_on_the_device_matches_the_numpy_backend(K, rng):
    """Trainer.fit on cuda (where the batches are gathered, the losses kept and the test set
    evaluated on the device) computes the numpy backend's fit over the same batches, and the
    parameters stay on the device."""
    from fastnn.backends.cuda.arrays import is_device
    x, y = rng.random((8, 1, 4, 4), dtype=np.float32), rng.integers(0, 5, 8)
    orders = []
    history, model = _fit("cuda", x, y, orders)
    assert all(is_device(value) for layer in model.layers for value in layer.params.values())
    assert len(orders) == 2 and all(sorted(order) == list(range(8)) for order in orders)
    want, _ = _fit("numpy", x, y, orders)
    assert len(history) == len(want) == 2
    for got, expected in zip(history, want):
        for key in ("train_loss", "test_loss"):   # float32 sums of a few terms: rounding far below 1e-5
            assert got[key] == pytest.approx(expected[key], rel=1e-5), key
        assert got["test_accuracy"] == expected["test_accuracy"]
    assert history[1]["train_loss"] < history[0]["train_loss"]  # and it trained
