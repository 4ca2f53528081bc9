"""model.summary() and `fastnn summary`: shapes against a real forward pass, counts against the arrays."""
import numpy as np
import pytest

import fastnn
from fastnn import models
from fastnn.cli import main
from fastnn.layers import AvgPool2D, BatchNorm, Conv2D, Dense, Flatten, Tanh
from fastnn.model import Sequential
from fastnn.summary import layer_rows, summary, totals


@pytest.mark.parametrize("name", list(models.MODELS))
def test_counts_and_shapes_of_every_named_model(name):
    fastnn.backends.use("numpy")
    model = models.build(name, seed=0)
    t = totals(model)
    params = sum(p.size for layer in model.layers for p in layer.params.values())
    assert t["trainable"] == t["total"] == params == model.num_params()
    assert t["non_trainable"] == 0 and t["bytes"] == 4 * params  # float32

    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    rows = layer_rows(model)
    assert [r["layer"] for r in rows] == model.layers
    for row, layer in zip(rows, model.layers):
        x = layer.forward(x, train=False)
        assert (2,) + row["output_shape"] == x.shape, row["description"]
        assert row["params"] == sum(p.size for p in layer.params.values())
        assert row["flops"] is not None

    text = summary(model)
    assert text == model.summary()
    assert f'Model: "{name}"' in text and f"Total params: {params:,}" in text
    assert f"Trainable params: {params:,}" in text and "Non-trainable params: 0" in text
    assert f"({t['flops']:,})" in text and "FLOPs per image" in text
    for row in rows:
        assert row["description"] in text


def test_flops_of_simple_cnn_by_hand():
    rows = layer_rows(models.build("simple-cnn"))
    conv, relu, pool, dense, last = rows[0], rows[1], rows[2], rows[4], rows[6]
    assert conv["description"] == "Conv2D 1->30 5x5" and conv["output_shape"] == (30, 24, 24)
    assert conv["flops"] == 2 * 1 * 5 * 5 * 30 * 24 * 24 + 30 * 24 * 24 == 864_000 + 17_280
    assert relu["flops"] == 30 * 24 * 24
    assert pool["flops"] == 3 * 30 * 12 * 12  # 3 comparisons per 2x2 window
    assert dense["description"] == "Dense 4320->100"
    assert dense["flops"] == 2 * 4320 * 100 + 100 == 864_100
    assert last["flops"] == 2 * 100 * 10 + 10
    assert totals(models.build("simple-cnn"))["flops"] == 1_777_730
    assert "FLOPs per image: 1.78 MFLOPs (1,777,730)" in summary(models.build("simple-cnn"))


def test_buffers_are_non_trainable_and_other_layers_are_counted(rng):
    model = Sequential([Conv2D(1, 4, 3, stride=2, pad=1, rng=rng), BatchNorm(4), Tanh(), AvgPool2D(2),
                        Flatten(), Dense(4 * 7 * 7, 10, rng=rng)], (1, 28, 28), name="bn")
    t = totals(model)
    assert (t["trainable"], t["non_trainable"], t["total"]) == (40 + 8 + 1970, 8, 40 + 8 + 1970 + 8)
    assert t["bytes"] == 4 * t["total"]
    rows = layer_rows(model)
    assert rows[0]["description"] == "Conv2D 1->4 3x3 stride 2 pad 1"
    assert [r["flops"] for r in rows[1:4]] == [3 * 4 * 14 * 14, 4 * 14 * 14, 4 * 4 * 7 * 7]
    text = model.summary()
    assert "Non-trainable params: 8" in text and "Total params: 2,026" in text


def test_the_plan_is_shown():
    assert "0-2 Conv2D + ReLU + MaxPool2D  [conv2d_relu_pool]" in models.build("simple-cnn").summary()
    assert "plan: every layer alone (fusion off)" in models.build("simple-cnn", fuse=False).summary()


def test_cli_named_and_saved_models_print_the_same_table(tmp_path, capsys):
    assert main(["summary", "--model", "simple-cnn"]) == 0
    named = capsys.readouterr().out
    assert named.strip() == models.build("simple-cnn").summary()
    path = tmp_path / "simple.npz"
    fastnn.save_model(path, models.build("simple-cnn", seed=3))
    assert main(["summary", str(path)]) == 0
    assert capsys.readouterr().out == named


@pytest.mark.parametrize("argv", [["summary"], ["summary", "m.npz", "--model", "mlp"], ["summary", "--model", "x"]])
def test_cli_needs_exactly_one_model(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "usage: fastnn summary" in capsys.readouterr().err


def test_cli_refuses_a_file_that_is_not_a_model(tmp_path, capsys):
    path = tmp_path / "notes.npz"
    path.write_text("not a model")
    assert main(["summary", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastnn summary: error:") and str(path) in err and len(err.strip().splitlines()) == 1
    np.savez(tmp_path / "arrays.npz", a=np.zeros(3))
    assert main(["summary", str(tmp_path / "arrays.npz")]) == 1
    assert "not a fastnn file" in capsys.readouterr().err
