"""ONNX export (fastnn/onnx_export.py): every named model and every layer type, run by onnxruntime
on real MNIST test images, gives fastnn's own inference logits; the file is a checked opset >= 17
model with a dynamic batch axis; `fastnn export` writes one and refuses what is not a model."""
import functools
import importlib
import sys

import numpy as np
import pytest

import fastnn
from fastnn import models
from fastnn.cli import main
from fastnn.layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, Sigmoid,
                           Tanh)
from fastnn.model import Sequential
from fastnn.onnx_export import EXPORTERS, to_onnx

from .conftest import IN_CI


def require(name):
    """Import ``name``; without it skip here, but fail under CI (CI=true), where these tests must run."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if IN_CI:
            pytest.fail(f"{name} must be installed in CI (pip install -e \".[dev]\"): {e}", pytrace=False)
        pytest.skip(f"{name} not installed: pip install onnx onnxruntime", allow_module_level=True)


onnx = require("onnx")
ort = require("onnxruntime")

TOL = dict(rtol=1e-4, atol=1e-4)
N_IMAGES = 64


@functools.lru_cache(maxsize=1)
def first_test_images(directory):
    return fastnn.load_mnist("mnist", directory, download_missing=False, progress=False)[2][:N_IMAGES]


@pytest.fixture
def images(mnist_dir):
    """The first 64 real MNIST test images, (64, 1, 28, 28) float32 in [0, 1]."""
    return first_test_images(mnist_dir)


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": x})
    return logits


def randomise_batchnorm(model, rng):
    """Non-trivial running statistics (and scale, shift), so the export of inference BatchNorm is tested."""
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            n = layer.num_features
            layer.params["gamma"][:] = rng.uniform(0.5, 1.5, n)
            layer.params["beta"][:] = rng.normal(0, 0.5, n)
            layer.buffers["running_mean"][:] = rng.normal(0, 0.5, n)
            layer.buffers["running_var"][:] = rng.uniform(0.2, 2.0, n)


def check_export(model, path, x):
    """Export, check, run with batches of 1, 37 and len(x); the max |onnxruntime - fastnn|."""
    to_onnx(model, path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert (graph_input.name, graph_output.name) == ("images", "logits")
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "N"  # the batch axis is dynamic
    assert graph_output.type.tensor_type.shape.dim[0].dim_param == "N"
    expected = fastnn.backends.get().to_host(model.forward(fastnn.backends.get().to_device(x), train=False))
    worst = 0.0
    for n in (1, 37, len(x)):
        got = run_onnx(path, x[:n])
        assert got.shape == (n,) + model.output_shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected[:n], **TOL)
        worst = max(worst, float(np.abs(got - expected[:n]).max()))
    return worst


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_named_model_matches_onnxruntime(name, images, tmp_path, rng):
    model = models.build(name, seed=3)
    randomise_batchnorm(model, rng)
    worst = check_export(model, tmp_path / f"{name}.onnx", images)
    print(f"{name}: max |onnxruntime - fastnn| = {worst:.2e}")


def every_layer_model(rng):
    """Every layer type, with the settings that are easy to get wrong: a stride-2 padded Conv2D,
    padded pools with odd sizes (floor rounding, -inf vs counted zero padding), BatchNorm per
    channel and per feature, random biases and BatchNorm statistics."""
    model = Sequential([
        Conv2D(1, 6, 3, stride=2, pad=1, rng=rng),      # 28 -> 14
        BatchNorm(6), Tanh(),
        MaxPool2D(3, stride=2, pad=1),                   # 14 -> 7; tanh < 0 in places: -inf padding matters
        AvgPool2D(3, stride=2, pad=1),                   # 7 -> 4; the zero padding counts in the mean
        Sigmoid(), Dropout(0.3), Flatten(),
        Dense(6 * 4 * 4, 32, init="xavier", rng=rng), BatchNorm(32), ReLU(), Dropout(0.5),
        Dense(32, 10, rng=rng),
    ], (1, 28, 28), name="every-layer", rng=rng)
    for layer in model.layers:
        if "b" in layer.params:
            layer.params["b"][:] = rng.normal(0, 0.3, layer.params["b"].shape)
    randomise_batchnorm(model, rng)
    return model


def test_every_layer_type_matches_onnxruntime(images, tmp_path, rng):
    model = every_layer_model(rng)
    assert {type(layer) for layer in model.layers} == set(EXPORTERS)
    x = (images - 0.5) * 2  # signed inputs: negative values reach every layer
    worst = check_export(model, tmp_path / "every.onnx", x)
    print(f"every-layer: max |onnxruntime - fastnn| = {worst:.2e}")


def test_sequential_method_and_metadata(tmp_path, rng):
    model = models.build("mlp", seed=0)
    proto = model.to_onnx(tmp_path / "mlp.onnx")
    assert proto.producer_name == "fastnn" and proto.producer_version == fastnn.__version__
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["model_name"] == "mlp" and props["fastnn_version"] == fastnn.__version__
    assert [node.op_type for node in proto.graph.node] == ["Flatten"] + ["Gemm", "Relu"] * 3 + ["Gemm"]
    assert {t.name for t in proto.graph.initializer} == {key for key, _, _ in model.param_items()}


def test_fused_plan_exports_its_layers(tmp_path):
    model = models.build("simple-cnn", seed=0, fuse=True)
    assert len(model.plan()) < len(model.layers)  # some layers run fused
    proto = model.to_onnx(tmp_path / "simple.onnx")
    assert [node.op_type for node in proto.graph.node] == ["Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu",
                                                           "Gemm"]


class Swish(Layer):
    def forward(self, x, train=True):
        return x / (1 + np.exp(-x))


def test_unsupported_layer_and_opset_are_named(tmp_path):
    model = Sequential([Flatten(), Swish(), Dense(784, 10)], (1, 28, 28), name="custom")
    with pytest.raises(fastnn.ConfigError, match=r"layer 1 \(Swish\) has no ONNX export"):
        to_onnx(model, tmp_path / "custom.onnx")
    with pytest.raises(fastnn.ConfigError, match="opset must be a whole number from 17"):
        to_onnx(models.build("mlp"), tmp_path / "mlp.onnx", opset=13)
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_export_writes_a_file_onnxruntime_runs(tmp_path, images, capsys):
    model = models.build("simple-cnn", seed=1)
    fastnn.save_model(tmp_path / "model.npz", model)
    out = tmp_path / "out" / "model.onnx"
    assert main(["export", str(tmp_path / "model.npz"), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "opset 17" in printed and f"{out.stat().st_size:,} bytes" in printed
    np.testing.assert_allclose(run_onnx(out, images[:5]), model.forward(images[:5], train=False), **TOL)
    assert main(["export", str(tmp_path / "model.npz"), str(out), "--opset", "18"]) == 0
    assert onnx.load(str(out)).opset_import[0].version == 18


def test_cli_export_refuses_a_file_that_is_not_a_model(tmp_path, capsys):
    bad = tmp_path / "notes.npz"
    bad.write_text("not a model")
    assert main(["export", str(bad), str(tmp_path / "out.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastnn export: error:") and "not a .npz file" in err and err.count("\n") == 1
    assert not (tmp_path / "out.onnx").exists()


def test_without_onnx_the_error_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(fastnn.ConfigError, match=r'pip install "fastnn\[onnx\]"'):
        models.build("mlp").to_onnx(tmp_path / "mlp.onnx")
    fastnn.save_model(tmp_path / "model.npz", models.build("mlp"))
    assert main(["export", str(tmp_path / "model.npz"), str(tmp_path / "mlp.onnx")]) == 1
    assert 'pip install "fastnn[onnx]"' in capsys.readouterr().err
    assert not (tmp_path / "mlp.onnx").exists()
