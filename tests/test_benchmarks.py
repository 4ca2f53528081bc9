"""benchmarks/train_throughput.py, a thin wrapper of fastnn/bench.py (the routine `fastnn bench` runs
too): it runs on a tiny case and writes its JSON, the per-layer profile covers every layer with the
right FLOP counts, and the PyTorch twins match fastnn's models. Tiny runs on the numpy backend:
these check the script works, never how fast anything is. tests/test_bench_cli.py checks the
command, its processes and its machine facts."""
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fastnn import backends, bench, models, optim
from fastnn.layers import Conv2D, Dense, Dropout
from fastnn.train import Trainer

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def throughput():
    """The script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_flops(model, batch_size):
    """[(forward, backward)] per layer, from the formulas: a conv's forward is 2*N*F*C*KH*KW*OH*OW,
    its backward that again for the weights and again for the input unless need_dx is off;
    a dense layer's forward is 2*N*D*M, its backward the same for dW and again for dx unless
    need_dx is off (the first layer with parameters); other layers 0."""
    shape, flops = model.input_shape, []
    for layer in model.layers:
        out = layer.output_shape(shape)
        if isinstance(layer, Conv2D):
            f, c, kh, kw = layer.params["W"].shape
            one = 2 * batch_size * f * c * kh * kw * out[1] * out[2]
            flops.append((one, one + (one if layer.need_dx else 0)))
        elif isinstance(layer, Dense):
            one = 2 * batch_size * layer.in_features * layer.out_features
            flops.append((one, one + (one if layer.need_dx else 0)))
        else:
            flops.append((0, 0))
        shape = out
    return flops


def test_every_model_has_defaults():
    assert set(bench.MODEL_DEFAULTS) == set(models.MODELS)


def test_runs_and_writes_json(throughput, tmp_path):
    out = tmp_path / "out.json"
    throughput.main(["--model", "mlp", "--backends", "numpy", "--images", "200", "--no-torch",
                     "--threads", "1", "--repeats", "2", "--json", str(out)])
    report = json.loads(out.read_text())
    (model,) = report["models"].values()
    assert (model["model"], model["batch_size"], model["optimizer"], model["lr"]) == ("mlp", 100, "adam", 1e-3)
    assert (report["images"], report["threads"], report["repeats"]) == (200, 1, 2)
    assert report["machine"]["threads"] == 1 and report["machine"]["cpu"]
    numpy = model["results"]["numpy"]
    assert "error" not in numpy, numpy
    assert len(numpy["runs"]) == 2 and all(run["images"] == 200 and run["seconds"] > 0 for run in numpy["runs"])
    assert numpy["images_per_second_min"] <= numpy["images_per_second"] <= numpy["images_per_second_max"]
    assert numpy["ratio_to_numpy"] == 1.0 and numpy["ratio_to_torch"] is None and numpy["ratio_to_best_torch"] is None
    assert report["options"]["torch_modes"] == [] and model["best_torch"] is None  # --no-torch: no PyTorch mode
    assert numpy["compile_seconds"] >= 0 and "profile" not in numpy


def test_profile_covers_every_layer(throughput, tmp_path):
    out = tmp_path / "out.json"
    throughput.main(["--model", "deep-cnn", "--backends", "numpy", "--batch-size", "8", "--images", "16",
                     "--no-torch", "--threads", "1", "--profile", "--profile-steps", "2", "--json", str(out)])
    result = json.loads(out.read_text())["models"]["deep-cnn"]["results"]["numpy"]
    assert "error" not in result, result
    profile, model = result["profile"], models.build("deep-cnn")
    assert (profile["steps"], profile["batch_size"], profile["threads"]) == (2, 8, 1)
    assert profile["sgemm_gflops"] > 0 and profile["step_ms"] > 0
    rows, plan = profile["layers"], model.plan()  # one row per step of the plan, fused blocks as one
    assert len(rows) == len(plan) < len(model.layers)
    assert [row["index"] for row in rows] == list(np.cumsum([0] + [len(step.layers) for step in plan[:-1]]))
    assert [row["layer"] for row in rows][:2] == ["Conv2D 1->16 3x3 pad 1 + ReLU",
                                                  "Conv2D 16->16 3x3 pad 1 + ReLU + MaxPool2D 2"]
    assert [row["kernel"] for row in rows] == [step.kernel for step in plan]
    per_layer, flops = iter(expected_flops(model, 8)), []
    for step in plan:
        parts = [next(per_layer) for _ in step.layers]
        flops.append((sum(f for f, _ in parts), sum(b for _, b in parts)))
    assert [(row["forward_flops"], row["backward_flops"]) for row in rows] == flops
    for row, step in zip(rows, plan):
        assert isinstance(row["algorithm"], str) and row["algorithm"]
        if row["forward_ms"] is not None and isinstance(step.layers[0], (Conv2D, Dense)):
            assert row["forward_gflops"] > 0 and row["forward_pct_sgemm"] > 0


def test_profile_asks_the_backend_for_the_conv_algorithm(monkeypatch):
    """In one process: the algorithm column comes from the backend's choice (tuning.choice: the
    algorithm and where it came from), and the layers get their own forward/backward methods back
    afterwards."""
    from fastnn.backends import tuning
    backends.use("numpy")
    monkeypatch.setattr(tuning, "choice", lambda backend, x_shape, w_shape, stride, pad: tuning.Choice(
        f"test {backend} {x_shape[0]} {w_shape[0]}", "tuned"))
    model = models.build("simple-cnn")
    trainer = Trainer(model, optim.make("adam"), batch_size=4, seed=0, progress=False)
    rng = np.random.default_rng(0)
    batches = [(rng.random((4, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 4))]
    profile = bench.profile_layers(trainer, SimpleNamespace(NAME="fake"), batches, steps=1, n_threads=1)
    assert [row["algorithm"] for row in profile["layers"]] == ["test fake 4 30"] + ["-"] * (len(model.plan()) - 1)
    assert profile["layers"][0]["algorithm_source"] == "tuned"
    assert not any("forward" in vars(step) or "backward" in vars(step) for step in model.plan())
    assert all(row["forward_ms"] > 0 and row["backward_ms"] is not None for row in profile["layers"])


def test_torch_twins_match():
    """Each twin computes its model's function: fastnn's weights loaded into it, the same logits,
    loss and weight gradients. In float64 on both sides (the numpy backend takes it), where rounding
    stays below 1e-12 of the values and a twin that differs in any layer is off by far more."""
    torch = pytest.importorskip("torch", reason="torch is not a fastnn dependency: the twins need it "
                                                "(pip install torch==2.13.0, the CPU build)")
    import torch.nn.functional as F
    K = backends.use("numpy")
    for name in models.MODELS:
        model = models.build(name, seed=1)
        twin = bench.torch_twin(model).double()
        assert sum(p.numel() for p in twin.parameters()) == model.num_params(), name
        rng = np.random.default_rng(0)
        x, labels = rng.random((2, *model.input_shape)), rng.integers(0, model.output_shape[0], 2)
        shape = x.shape
        for layer, module in zip(model.layers, twin, strict=True):
            for table in (layer.params, layer.buffers):
                for key in table:
                    table[key] = table[key].astype(np.float64)
            if isinstance(layer, (Conv2D, Dense)):   # torch's Linear keeps W as (out, in): fastnn's W.T
                W = layer.params["W"] if isinstance(layer, Conv2D) else layer.params["W"].T
                module.weight.data, module.bias.data = torch.tensor(W), torch.tensor(layer.params["b"])
            if isinstance(layer, Dropout):   # the same rate; off on both sides below (an all-ones mask, eval())
                assert module.p == layer.p, name
                layer.fixed_mask = np.ones(shape)
            shape = (len(x), *layer.output_shape(shape[1:]))
        logits = model.forward(x, train=True)
        loss, cache = K.softmax_cross_entropy(logits, labels)
        model.backward(K.softmax_cross_entropy_backward(cache))
        twin.eval()
        twin_logits = twin(torch.tensor(x))
        twin_loss = F.cross_entropy(twin_logits, torch.tensor(labels))
        twin_loss.backward()
        np.testing.assert_allclose(logits, twin_logits.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
        assert loss == pytest.approx(twin_loss.item(), rel=1e-12), name
        for i, (layer, module) in enumerate(zip(model.layers, twin)):
            if isinstance(layer, (Conv2D, Dense)):
                dW = module.weight.grad.numpy() if isinstance(layer, Conv2D) else module.weight.grad.numpy().T
                scale = np.abs(dW).max()
                np.testing.assert_allclose(layer.grads["W"], dW, rtol=1e-10, atol=1e-12 * scale, err_msg=f"{name} {i}")
                np.testing.assert_allclose(layer.grads["b"], module.bias.grad.numpy(), rtol=1e-10,
                                           atol=1e-12 * scale, err_msg=f"{name} {i}")


def test_flops_of_a_layer_that_skips_dx():
    """mlp's first Dense skips its input gradient: its backward is one product, not two."""
    model = models.build("mlp")
    first, second = model.layers[1], model.layers[3]
    one = 2 * 8 * 784 * 100
    assert bench.layer_flops(first, (8, 784), (8, 100)) == (one, one)
    assert bench.layer_flops(second, (8, 100), (8, 100)) == (2 * 8 * 100 * 100, 4 * 8 * 100 * 100)


def test_time_to_accuracy_runs_fastnn_on_a_subset(mnist_dir, tmp_path):
    """benchmarks/time_to_accuracy.py, fastnn's contestant only (no torch needed), on 4,096 training
    images (16 steps of 256): one run of `fastnn train --recipe speedrun` in a subprocess, its numbers
    in the JSON, and an accuracy that only a net that learned reaches."""
    spec = importlib.util.spec_from_file_location("time_to_accuracy", SCRIPT.with_name("time_to_accuracy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "tta.json"
    module.main(["--runs", "fastnn", "--seeds", "0", "--limit", "4096", "--threads", "1", "--data", str(mnist_dir),
                 "--json", str(out)])
    report = json.loads(out.read_text())
    assert list(report["contestants"]) == ["fastnn"] and report["seeds"] == [0] and report["limit"] == 4096
    fastnn = report["contestants"]["fastnn"]
    assert fastnn["failed_runs"] == 0, fastnn["runs"]
    (run,) = fastnn["runs"]
    assert run["seed"] == 0 and run["train_images"] == 4096 and run["model"] == "speedrun-net"
    # On the 10,000 test images, guessing the commonest digit scores 0.1135, and a net that does not
    # learn (no gradient, or a wrong one) stays about there; 16 steps of the recipe reach about 0.78.
    assert isinstance(run["accuracy"], float) and 0.5 <= run["accuracy"] <= 1
    assert run["train_seconds"] > 0 and run["eval_seconds"] >= 0 and run["compile_seconds"] >= 0
    assert run["seconds_to_target"] is None or run["seconds_to_target"] >= run["train_seconds"]
    assert "missing_metrics" not in run, run["missing_metrics"]
    assert fastnn["median_train_seconds"] == run["train_seconds"] and fastnn["median_accuracy"] == run["accuracy"]
    assert report["ratio_fastnn_to_torch_published_train_seconds"] is None


def test_time_to_accuracy_builds_its_twin_with_fastnn_bench():
    """benchmarks/time_to_accuracy.py's torch-fastnn-recipe contestant: fastnn.bench.torch_twin of the
    recipe's model (the twin used to live in train_throughput.py)."""
    pytest.importorskip("torch")
    from fastnn.recipes import RECIPES

    spec = importlib.util.spec_from_file_location("time_to_accuracy", SCRIPT.with_name("time_to_accuracy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    build, settings = module.torch_settings("torch-fastnn-recipe", 512)
    assert settings["model"] == RECIPES["speedrun"]["model"]
    assert sum(p.numel() for p in build().parameters()) == models.build(settings["model"]).num_params()
