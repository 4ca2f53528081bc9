"""The textbook's numbers, from the scripts in examples/ (fast: seconds in all).

Each example is imported from its file (examples/ is not a package) and its functions are
checked against the numbers the book prints; a second test runs each script the way a
reader would, ``python examples/<name>.py``.
"""
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import backends
from fastnn.gradcheck import relative_error
from fastnn.regularization import L1, L2, ElasticNet
from fastnn.threads import current_threads

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def example(name):
    """Import examples/<name>.py as a module of its own."""
    spec = importlib.util.spec_from_file_location(f"fastnn_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny arrays: one thread. Two on a busy 2-core machine make every parallel region wait
    for a time slice (the numba backend's XOR test took 8 s instead of under 1). Restored after."""
    backends.get()  # set_threads limits the libraries already loaded
    previous = current_threads()
    fastnn.set_threads(1)
    yield
    fastnn.set_threads(previous)


def run_example(*args, timeout=120):
    """Run ``python examples/<script> args...`` from the repository root (one thread, as above); its stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               FASTNN_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(EXAMPLES / args[0]), *args[1:]], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout


# ---------------------------------------------------------------------- chapter 2: perceptron
def test_gates_with_fixed_weights_give_their_truth_tables():
    p = example("perceptron")
    for name, gate in p.GATES.items():
        outputs = [gate(x1, x2) for x1, x2 in p.INPUTS]
        assert outputs == list(p.TRUTH_TABLES[name]), name
    assert [p.XOR(a, b) for a, b in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 1, 1, 0]


@pytest.mark.parametrize("gate", ["AND", "OR", "NAND"])
def test_perceptron_rule_learns_linearly_separable_gates(gate):
    p = example("perceptron")
    w, b, history = p.learn(p.INPUTS, p.TRUTH_TABLES[gate], epochs=100)
    assert history[-1] == 4 and len(history) < 20
    assert [p.perceptron(x, w, b) for x in p.INPUTS] == list(p.TRUTH_TABLES[gate])


def test_perceptron_rule_never_separates_xor():
    p = example("perceptron")
    w, b, history = p.learn(p.INPUTS, p.TRUTH_TABLES["XOR"], epochs=100)
    assert len(history) == 100 and max(history) < 4
    assert [p.perceptron(x, w, b) for x in p.INPUTS] != list(p.TRUTH_TABLES["XOR"])


# ---------------------------------------------------------------------- chapter 4: losses, gradients
def test_losses_by_hand_match_the_book():
    losses = example("losses")
    assert losses.mean_squared_error(losses.Y_RIGHT, losses.T) == pytest.approx(0.0975)
    assert losses.cross_entropy_error(losses.Y_RIGHT, losses.T) == pytest.approx(0.5108, abs=1e-4)
    assert losses.cross_entropy_error(losses.Y_RIGHT, losses.T) == pytest.approx(-math.log(0.6), abs=1e-6)
    assert losses.mean_squared_error(losses.Y_WRONG, losses.T) == pytest.approx(0.5975)
    assert losses.cross_entropy_error(losses.Y_WRONG, losses.T) == pytest.approx(2.3026, abs=1e-4)


def test_fastnn_losses_give_the_book_numbers_for_a_batch_of_one():
    losses = example("losses")
    assert losses.fastnn_mse(losses.Y_RIGHT, losses.T) == pytest.approx(0.0975, rel=1e-5)
    assert losses.fastnn_mse(losses.Y_WRONG, losses.T) == pytest.approx(0.5975, rel=1e-5)
    assert losses.fastnn_cross_entropy(losses.Y_RIGHT, 2) == pytest.approx(-math.log(0.6), abs=1e-4)
    assert losses.fastnn_cross_entropy(losses.Y_WRONG, 2) == pytest.approx(-math.log(0.1), abs=1e-4)


def test_fastnn_mse_averages_over_the_batch():
    losses = example("losses")
    K = backends.get()
    y = K.to_device(np.stack([losses.Y_RIGHT, losses.Y_WRONG]).astype(np.float32))
    t = K.to_device(np.stack([losses.T, losses.T]).astype(np.float32))
    assert fastnn.MeanSquaredError().forward(y, t) == pytest.approx((0.0975 + 0.5975) / 2, rel=1e-5)


def test_numerical_gradient_of_the_sum_of_squares():
    gd = example("gradient_descent")
    for point, expected in (([3.0, 4.0], [6.0, 8.0]), ([0.0, 2.0], [0.0, 4.0]), ([3.0, 0.0], [6.0, 0.0])):
        x = np.array(point)
        assert fastnn.numerical_gradient(gd.function_2, x) == pytest.approx(expected, abs=1e-6)
        assert list(x) == point  # probed in place, restored after


def test_gradient_descent_reaches_the_minimum():
    gd = example("gradient_descent")
    x, path = gd.gradient_descent(gd.function_2, [-3.0, 4.0], lr=0.1, step_num=100)
    assert np.all(np.abs(x) < 1e-6)
    assert x == pytest.approx([-6.1e-10, 8.1e-10], rel=0.01)  # the book prints these
    assert path.shape == (101, 2) and list(path[0]) == [-3.0, 4.0]
    assert np.all(np.diff([gd.function_2(p) for p in path]) < 0)  # downhill every step


def test_gradient_descent_learning_rate_too_large_or_too_small():
    gd = example("gradient_descent")
    x_big, _ = gd.gradient_descent(gd.function_2, [-3.0, 4.0], lr=10.0, step_num=100)
    x_small, _ = gd.gradient_descent(gd.function_2, [-3.0, 4.0], lr=1e-10, step_num=100)
    assert np.abs(x_big).max() > 1e10
    assert x_small == pytest.approx([-3.0, 4.0], abs=1e-6)


def test_gradient_descent_plot(tmp_path):
    out = run_example("gradient_descent.py", "--plot", str(tmp_path / "descent.png"))
    assert "lr 0.1, 100 steps" in out
    png = (tmp_path / "descent.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


# ---------------------------------------------------------------------- chapter 5: backpropagation
def test_apple_and_orange_graph():
    graph = example("computational_graph")
    price, grads = graph.buy_apples_and_oranges()
    assert price == pytest.approx(715)
    assert grads["apple"] == pytest.approx(2.2)
    assert grads["apple_num"] == pytest.approx(110)
    assert grads["orange"] == pytest.approx(3.3)
    assert grads["orange_num"] == pytest.approx(165)
    assert grads["tax"] == pytest.approx(650)


def test_xor_sigmoid_mse_learns_the_truth_table():
    xor = example("xor")
    y, losses = xor.learn_xor_sigmoid_mse(seed=0)
    assert list(np.round(y).astype(int)) == [0, 1, 1, 0]
    assert np.all(np.abs(y - xor.XOR) < 0.2)
    assert losses[-1] < 0.01 < 0.1 < losses[0]  # the loss fell more than tenfold


def test_xor_tanh_softmax_learns_the_truth_table():
    xor = example("xor")
    labels, p1, losses = xor.learn_xor_tanh_softmax(seed=0)
    assert list(labels) == [0, 1, 1, 0]
    assert np.all(np.abs(p1 - xor.XOR) < 0.1)
    assert losses[-1] < 0.05 and losses[0] > 0.5


def test_gradient_check_of_a_small_cnn_passes():
    errors = example("gradient_check").check_small_cnn()
    assert set(errors) >= {"0.W", "0.b", "1.gamma", "1.beta", "5.W", "9.W", "input", "max"}
    assert errors["max"] == max(v for k, v in errors.items() if k != "max")
    assert errors["max"] < 1e-6


def test_gradient_check_catches_a_wrong_backward(monkeypatch):
    gc = example("gradient_check")
    broken = fastnn.ReLU.backward
    monkeypatch.setattr(fastnn.ReLU, "backward", lambda self, dy: 1.01 * broken(self, dy))
    errors = gc.check_small_cnn()
    assert errors["max"] > 1e-4
    assert errors["9.W"] < 1e-6  # the last Dense sits after every ReLU: its gradient is still right


def test_relative_error_of_a_zero_gradient_is_small():
    # a conv bias before BatchNorm: backprop gives round-off, the differences give 0
    assert relative_error(np.array([-6e-17, 2e-17, -2e-16]), np.zeros(3)) < 1e-10
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-9])) < 1e-9
    assert relative_error(np.array([1.0, 2.0]), np.array([-1.0, 2.0])) > 0.3


# ---------------------------------------------------------------------- chapter 6: penalties
def small_model(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    model = fastnn.Sequential([fastnn.Flatten(), fastnn.Dense(12, 6, rng=rng), fastnn.BatchNorm(6), fastnn.ReLU(),
                               fastnn.Dense(6, 3, rng=rng)], input_shape=(3, 2, 2), rng=rng)
    return model.astype(dtype)


def backward_once(model, seed=1):
    K = backends.get()
    rng = np.random.default_rng(seed)
    x = K.to_device(rng.standard_normal((8,) + model.input_shape).astype(model.dtype))
    t = K.to_device(rng.integers(0, 3, 8))
    loss = fastnn.SoftmaxCrossEntropy()
    loss.forward(model.forward(x), t)
    model.backward(loss.backward())


@pytest.mark.parametrize("penalty", [L1(0.3), L2(0.7), ElasticNet(0.2, 0.5)], ids=repr)
def test_penalty_gradient_matches_the_numerical_gradient(penalty):
    backends.use("numpy")  # float64, so the differences are exact enough (the fixture restores the backend)
    model = small_model(dtype=np.float64)
    backward_once(model)
    before = {key: grad.copy() for key, _, grad in model.param_items()}
    value = penalty.add_gradients(model)
    assert value == pytest.approx(penalty.penalty(model)) and value > 0
    for key, param, grad in model.param_items():
        added = grad - before[key]
        if key.endswith(".W"):
            numeric = fastnn.numerical_gradient(lambda _: penalty.penalty(model), param, eps=1e-6)
            assert relative_error(added, numeric) < 1e-7, key
        else:
            assert np.all(added == 0), key  # biases and BatchNorm's gamma, beta are not penalised


def test_penalty_values_by_hand():
    model = small_model()
    K = backends.get()
    weights = [K.to_host(p).astype(np.float64) for key, p, _ in model.param_items() if key.endswith(".W")]
    l1 = sum(np.abs(w).sum() for w in weights)
    l2 = sum((w * w).sum() for w in weights)
    assert L1(0.3).penalty(model) == pytest.approx(0.3 * l1, rel=1e-6)
    assert L2(0.7).penalty(model) == pytest.approx(0.35 * l2, rel=1e-6)
    assert ElasticNet(0.2, 0.5).penalty(model) == pytest.approx(0.2 * l1 + 0.25 * l2, rel=1e-6)
    every = sum((K.to_host(p).astype(np.float64) ** 2).sum() for _, p, _ in model.param_items())
    assert L2(1.0, weights_only=False).penalty(model) == pytest.approx(0.5 * every, rel=1e-6)


def test_penalty_adds_through_the_active_backend():
    model = small_model()
    backward_once(model)
    K = backends.get()
    before = {key: K.to_host(grad).copy() for key, _, grad in model.param_items()}
    ElasticNet(0.2, 0.5).add_gradients(model)
    for key, param, grad in model.param_items():
        w = K.to_host(param)
        expected = before[key] + (0.2 * np.sign(w) + 0.5 * w if key.endswith(".W") else 0)
        np.testing.assert_allclose(K.to_host(grad), expected, rtol=1e-5, atol=1e-6)


def test_penalty_needs_a_backward_pass_first():
    with pytest.raises(fastnn.ConfigError, match="backward"):
        L2(0.1).add_gradients(small_model())


def test_negative_strength_is_refused():
    with pytest.raises(fastnn.ConfigError, match="lam"):
        L1(-1.0)


def sparse_problem(seed=0):
    """400 points, 30 features of which only the first 3 decide the class."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((400, 30)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] - x[:, 2] > 0).astype(np.int64)
    return x, y


def train_linear(regularizer, seed=0):
    x, y = sparse_problem(seed)
    model = fastnn.Sequential([fastnn.Dense(30, 2, init="xavier", rng=np.random.default_rng(seed))], input_shape=(30,))
    trainer = fastnn.Trainer(model, fastnn.SGD(lr=0.1), batch_size=40, seed=seed, progress=False,
                             regularizer=regularizer)
    history = trainer.fit(x, y, epochs=60)
    W = backends.get().to_host(model.param_items()[0][1])
    _, accuracy = model.evaluate(x, y)
    return W, accuracy, history


def test_l1_drives_irrelevant_weights_to_zero():
    W_plain, acc_plain, _ = train_linear(None)
    W_l1, acc_l1, _ = train_linear(L1(0.01))
    near_zero = lambda W: int((np.abs(W[3:]) < 0.02).sum())  # the 27 irrelevant features x 2 classes
    assert near_zero(W_l1) >= 40 and near_zero(W_l1) >= near_zero(W_plain) + 20
    assert np.abs(W_l1[:3]).min() > 0.1  # the three that matter stay
    assert acc_l1 > 0.95 and acc_plain > 0.95


def test_trainer_adds_the_penalty_to_the_loss():
    x, y = sparse_problem()
    losses = {}
    for name, regularizer in (("plain", None), ("l2", L2(0.5))):
        model = fastnn.Sequential([fastnn.Dense(30, 2, init="xavier", rng=np.random.default_rng(0))],
                                  input_shape=(30,))
        trainer = fastnn.Trainer(model, fastnn.SGD(lr=1e-6), batch_size=400, seed=0, progress=False,
                                 regularizer=regularizer)
        losses[name] = trainer.fit(x, y, epochs=1)[-1]["train_loss"]
        if regularizer is not None:
            penalty = regularizer.penalty(model)
    assert losses["l2"] == pytest.approx(losses["plain"] + penalty, rel=1e-4)


# ---------------------------------------------------------------------- the scripts themselves
@pytest.mark.parametrize("script, expected", [
    ("perceptron.py", "XOR : never separable"),
    ("computational_graph.py", "price: 715.0"),
    ("losses.py", "MSE 0.0975"),
    ("xor.py", "XOR(1, 1) -> P(1)"),
    ("gradient_check.py", "pass: below 1e-6"),
])
def test_example_runs_with_one_command(script, expected):
    assert expected in run_example(script)
