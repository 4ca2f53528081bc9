"""Sequential's plan (fastnn/fusion.py): which chains it fuses, that a fused training step
equals the unfused one on every backend, and the switch that turns fusion off."""
import numpy as np
import pytest

from fastnn import Sequential, backends, load_model, models, optim, save_model
from fastnn.errors import ConfigError, ShapeError
from fastnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from fastnn.train import Trainer

from .conftest import SIMULATED_CUDA, load_or_skip


def spans(model):
    """[(first layer, last layer, kernel or None)] of the model's plan."""
    out, first = [], 0
    for step in model.plan():
        out.append((first, first + len(step.layers) - 1, step.kernel))
        first += len(step.layers)
    return out


def test_plan_of_the_named_models():
    assert spans(models.build("simple-cnn")) == [
        (0, 2, "conv2d_relu_pool"), (3, 3, None), (4, 5, "dense_relu"), (6, 6, None)]
    assert [k for *_, k in spans(models.build("deep-cnn"))][:6] == ["conv2d_relu", "conv2d_relu_pool"] * 3
    assert spans(models.build("mlp")) == [(0, 0, None), (1, 2, "dense_relu"), (3, 4, "dense_relu"),
                                          (5, 6, "dense_relu"), (7, 7, None)]
    text = models.build("pytorch-net").summary()
    assert "0-1 Conv2D + ReLU  [conv2d_relu]" in text and "2-4 Conv2D + ReLU + MaxPool2D  [conv2d_relu_pool]" in text


def test_only_2x2_max_pools_join_a_chain(rng):
    layers = [Conv2D(1, 2, 3, rng=rng), ReLU(), MaxPool2D(3), Flatten(), Dense(2 * 2 * 2, 3, rng=rng)]
    assert [step.kernel for step in Sequential(layers, (1, 8, 8)).plan()] == ["conv2d_relu", None, None, None]


def test_the_switch(monkeypatch):
    monkeypatch.setenv("FASTNN_FUSION", "0")
    model = models.build("simple-cnn")
    assert not model.fuse and all(step.kernel is None for step in model.plan())
    assert "fusion off" in model.summary()
    monkeypatch.setenv("FASTNN_FUSION", "1")
    assert models.build("simple-cnn").fuse
    assert not Sequential(models.simple_cnn(np.random.default_rng(0)), (1, 28, 28), fuse=False).fuse
    with pytest.raises(ConfigError, match="fuse must be True or False"):
        Sequential(models.simple_cnn(np.random.default_rng(0)), (1, 28, 28), fuse="no")
    monkeypatch.setenv("FASTNN_FUSION", "maybe")
    with pytest.raises(ConfigError, match="FASTNN_FUSION='maybe'"):
        models.build("simple-cnn")


def test_files_do_not_depend_on_fusion(tmp_path):
    fused = models.build("simple-cnn", seed=3)
    plain = Sequential.from_config(fused.config())
    plain.load_state_arrays(fused.state_arrays())
    assert fused.config() == plain.config()
    save_model(tmp_path / "m", fused)
    again, _ = load_model(tmp_path / "m")
    assert again.fuse and [s.kernel for s in again.plan()] == [s.kernel for s in fused.plan()]


def test_a_wrong_gradient_names_the_layer(rng):
    model = models.build("simple-cnn")
    model.forward(rng.random((2, 1, 28, 28), dtype=np.float32))
    block = model.plan()[0]
    with pytest.raises(ShapeError, match=r"MaxPool2D: expected a gradient of shape \(2, 30, 12, 12\)"):
        block.backward(np.zeros((2, 30, 24, 24), np.float32))
    model.forward(rng.random((2, 1, 28, 28), dtype=np.float32), train=False)
    with pytest.raises(ShapeError, match="train=False"):
        block.backward(np.zeros((2, 30, 12, 12), np.float32))


def tiny_net(rng):
    """Every fused chain at shapes the CUDA simulator runs in seconds, and a dropout between two
    fused blocks (as in pytorch-net): the fused and unfused steps must draw the same mask."""
    return [Conv2D(1, 3, 3, pad=1, rng=rng), ReLU(), MaxPool2D(2), Dropout(0.25), Conv2D(3, 4, 3, rng=rng), ReLU(),
            Flatten(), Dense(4 * 2 * 2, 6, rng=rng), ReLU(), Dense(6, 3, rng=rng)]


def one_step(backend, make_layers, input_shape, n_classes, fuse, batch=8):
    """Loss, gradients and updated parameters after one SGD step from fixed weights and data
    (SGD: the update is linear in the gradient, so float32 noise stays float32 noise)."""
    backends.use(backend)
    model = Sequential(make_layers(np.random.default_rng(1)), input_shape, fuse=fuse)
    trainer = Trainer(model, optim.make("sgd", lr=0.1), batch_size=batch, seed=0, progress=False)
    rng = np.random.default_rng(2)
    K = backends.get()
    x = K.to_device(rng.random((batch,) + input_shape, dtype=np.float32))
    y = K.to_device(rng.integers(0, n_classes, batch))
    loss = trainer.train_step(x, y)
    grads = {key: K.to_host(g) for key, _, g in model.param_items()}
    return loss, grads, model.state_arrays()


CASES = [("simple-cnn", models.simple_cnn, 10), ("pytorch-net", models.pytorch_net, 10),
         ("deep-cnn", models.deep_cnn, 10), ("mlp", models.mlp, 10), ("tiny", tiny_net, 3)]


# The simulator runs every multiply-add of a GEMM as Python: one fused and one unfused step of one
# image cost about 3 s of CPU for mlp, 11 s for simple-cnn, 23 s for deep-cnn and 51 s for
# pytorch-net. The last two are left to a GPU (together they would add over a minute to a suite
# of about 9); their fused chains, and a dropout after a fused block, are in the tiny net.
GPU_ONLY = {"deep-cnn": 23, "pytorch-net": 51}


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython", "cuda"])
@pytest.mark.parametrize("name,make_layers,n_classes", CASES, ids=[c[0] for c in CASES])
def test_fused_step_equals_unfused_step(backend, name, make_layers, n_classes):
    if backend != "numpy":
        load_or_skip(backend)
    simulated = backend == "cuda" and SIMULATED_CUDA
    if simulated and name in GPU_ONLY:
        pytest.skip(f"real GPU only: {name}'s two steps take about {GPU_ONLY[name]} s in the CUDA simulator "
                    "(every multiply-add in Python); the tiny net has its fused chains")
    shape = (1, 8, 8) if name == "tiny" else (1, 28, 28)
    # simulator: one image through a named model (the batch axis is the tiny net's, at 2 images)
    batch = (2 if name == "tiny" else 1) if simulated else 8
    loss_f, grads_f, state_f = one_step(backend, make_layers, shape, n_classes, True, batch)
    loss_u, grads_u, state_u = one_step(backend, make_layers, shape, n_classes, False, batch)
    assert loss_f == pytest.approx(loss_u, rel=1e-5)
    for key in grads_u:
        scale = np.abs(grads_u[key]).max() + 1e-12
        np.testing.assert_allclose(grads_f[key], grads_u[key], rtol=1e-3, atol=1e-4 * scale, err_msg=key)
    for key in state_u:
        np.testing.assert_allclose(state_f[key], state_u[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_first_layer_with_parameters_skips_its_input_gradient(rng):
    model = models.build("mlp")
    assert not model.layers[1].need_dx and model.layers[3].need_dx
    logits = model.forward(rng.random((4, 1, 28, 28), dtype=np.float32))
    assert model.backward(np.ones_like(logits)) is None
    assert model.layers[1].grads["W"].shape == (784, 100)


def test_cli_no_fusion_trains_the_same(mnist_dir, tmp_path, capsys):
    """`fastnn train --no-fusion` runs every layer alone and ends with the same model (to float32)."""
    from fastnn.cli import main
    finals = {}
    for flag in ([], ["--no-fusion"]):
        path = tmp_path / f"model{len(flag)}.npz"
        assert main(["train", "--model", "simple-cnn", "--epochs", "1", "--limit", "300", "--batch-size", "50",
                     "--optimizer", "sgd", "--data", str(mnist_dir), "--threads", "1", "--no-progress",
                     "--save", str(path), *flag]) == 0
        assert f"fusion {'off' if flag else 'on'}" in capsys.readouterr().out
        finals[bool(flag)] = load_model(path)[0].state_arrays()
    for key, value in finals[False].items():
        np.testing.assert_allclose(finals[True][key], value, rtol=1e-4, atol=1e-5, err_msg=key)
