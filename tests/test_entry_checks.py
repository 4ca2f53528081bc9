"""Every public entry point refuses what its compiled kernels cannot take, on every backend.

A compiled kernel indexes without bounds checks: a label of 10 for 10 classes made numba's loss
read outside its row (exit 139 on a bad day). So each layer, loss, model and trainer call below
gets out-of-range labels, wrong shapes and wrong dtypes, and must raise a fastnn error that
names the problem: each case's EXPECTED fragment (the layer, the expected shape or dtype, the
valid range) must be in its message. The calls that must keep working must raise nothing at all.
The calls run in a child process: a crash fails the test with the call that crashed, instead of
killing pytest.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from .conftest import load_or_skip

PROBE = textwrap.dedent('''
    import json, sys
    import numpy as np
    from fastnn import backends, errors, optim
    from fastnn.model import Sequential
    from fastnn.layers import AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh
    from fastnn.losses import MeanSquaredError, SoftmaxCrossEntropy
    from fastnn.train import Trainer

    K = backends.use(sys.argv[1])
    rng = np.random.default_rng(0)
    dev = K.to_device

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def labels(*values):
        return np.array(values, np.int64)

    def backward_with(layer, x, dy):
        for table in (layer.params, layer.buffers):  # in the backend's memory: else cuda's forward refuses
            table.update({name: dev(value) for name, value in table.items()})  # them and backward is never reached
        layer.forward(x)
        return layer.backward(dy)

    # a small net (the CUDA simulator runs every GPU thread in Python)
    net = Sequential([Conv2D(1, 3, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(3 * 5 * 5, 10)], (1, 12, 12))
    trainer = Trainer(net, optim.SGD(lr=0.01), batch_size=4, progress=False)
    images = f32(4, 1, 12, 12)
    CASES = {
        # the loss: the defect as reported, then every other way labels can be wrong
        "loss label = K": lambda: SoftmaxCrossEntropy().forward(dev(f32(4, 10)), dev(labels(1, 2, 10, 3))),
        "loss label huge": lambda: SoftmaxCrossEntropy().forward(dev(f32(4, 10)), dev(labels(1, 2, 10**9, 3))),
        "loss label < 0": lambda: SoftmaxCrossEntropy().forward(dev(f32(4, 10)), dev(labels(1, -1, 2, 3))),
        "loss float labels": lambda: SoftmaxCrossEntropy().forward(dev(f32(4, 10)), np.ones(4, np.float32)),
        "loss too few labels": lambda: SoftmaxCrossEntropy().forward(dev(f32(4, 10)), dev(labels(1, 2, 3))),
        "loss 1-d logits": lambda: SoftmaxCrossEntropy().forward(dev(f32(10)), dev(labels(1))),
        "loss int logits": lambda: SoftmaxCrossEntropy().forward(np.ones((4, 10), np.int64), labels(1, 2, 3, 4)),
        "loss list labels": lambda: SoftmaxCrossEntropy().forward(dev(f32(4, 10)), [1, 2, 3, 4]),
        "mse shapes": lambda: MeanSquaredError().forward(dev(f32(4, 10)), dev(f32(4, 9))),
        "mse int target": lambda: MeanSquaredError().forward(dev(f32(4, 3)), np.ones((4, 3), np.int64)),
        # layers: wrong shapes and dtypes, forward and backward
        "dense features": lambda: Dense(8, 3).forward(dev(f32(2, 9))),
        "dense float64": lambda: Dense(8, 3).forward(np.zeros((2, 8))),
        "dense dy shape": lambda: backward_with(Dense(8, 3), dev(f32(2, 8)), dev(f32(2, 4))),
        "dense dy float64": lambda: backward_with(Dense(8, 3), dev(f32(2, 8)), np.zeros((2, 3))),
        "dense dy int": lambda: backward_with(Dense(8, 3), dev(f32(2, 8)), np.zeros((2, 3), np.int32)),
        "conv channels": lambda: Conv2D(3, 4, 3).forward(dev(f32(2, 1, 8, 8))),
        "conv too small": lambda: Conv2D(1, 4, 5).forward(dev(f32(2, 1, 4, 4))),
        "conv 3-d": lambda: Conv2D(1, 4, 3).forward(dev(f32(1, 8, 8))),
        "conv float64": lambda: Conv2D(1, 4, 3).forward(np.zeros((2, 1, 8, 8))),
        "conv dy shape": lambda: backward_with(Conv2D(1, 4, 3), dev(f32(2, 1, 8, 8)), dev(f32(2, 4, 5, 5))),
        "conv dy float64": lambda: backward_with(Conv2D(1, 4, 3), dev(f32(2, 1, 8, 8)), np.zeros((2, 4, 6, 6))),
        "maxpool 3-d": lambda: MaxPool2D(2).forward(dev(f32(2, 8, 8))),
        "maxpool too small": lambda: MaxPool2D(3).forward(dev(f32(2, 1, 2, 2))),
        "maxpool int": lambda: MaxPool2D(2).forward(np.zeros((2, 1, 4, 4), np.int32)),
        "maxpool dy shape": lambda: backward_with(MaxPool2D(2), dev(f32(2, 1, 4, 4)), dev(f32(2, 1, 3, 3))),
        "avgpool dy int": lambda: backward_with(AvgPool2D(2), dev(f32(2, 1, 4, 4)), np.zeros((2, 1, 2, 2), np.int32)),
        "relu int": lambda: ReLU().forward(np.zeros((2, 3), np.int64)),
        "relu dy shape": lambda: backward_with(ReLU(), dev(f32(2, 3)), dev(f32(3, 2))),
        "sigmoid empty": lambda: Sigmoid().forward(dev(f32(0, 3))),
        "tanh dy int": lambda: backward_with(Tanh(), dev(f32(2, 3)), np.zeros((2, 3), np.int64)),
        "dropout int": lambda: Dropout(0.5).forward(np.zeros((2, 3), np.int64)),
        "batchnorm features": lambda: BatchNorm(4).forward(dev(f32(2, 5))),
        "batchnorm dy shape": lambda: backward_with(BatchNorm(4), dev(f32(3, 4)), dev(f32(3, 5))),
        "flatten dy shape": lambda: backward_with(Flatten(), dev(f32(2, 1, 2, 2)), dev(f32(2, 3))),
        # models and the trainer
        "model forward shape": lambda: net.forward(dev(f32(2, 1, 11, 12))),
        "model forward float64": lambda: net.forward(np.zeros((2, 1, 12, 12))),
        "model backward shape": lambda: (net.forward(dev(images)), net.backward(dev(f32(4, 9)))),
        "model evaluate label": lambda: net.evaluate(images, labels(0, 1, 2, 10)),
        "model predict float64": lambda: net.predict(np.zeros((2, 1, 12, 12))),
        "train_step label": lambda: trainer.train_step(dev(images), dev(labels(0, 1, 10, 2))),
        "train_step label < 0": lambda: trainer.train_step(dev(images), dev(labels(0, 1, -3, 2))),
        "train_step shape": lambda: trainer.train_step(dev(f32(4, 1, 12, 11)), dev(labels(0, 1, 2, 3))),
        "fit label": lambda: trainer.fit(images, labels(0, 1, 2, 11), epochs=1),
    }
    # what must keep working: strided (non-contiguous) views and a valid step after the refusals
    WORKS = {"valid train_step": lambda: trainer.train_step(dev(images), dev(labels(0, 1, 2, 3)))}
    if K.NAME != "cuda":  # device arrays are contiguous by construction
        WORKS["strided input"] = lambda: Dense(8, 3).forward(f32(2, 16)[:, ::2])
    for name, call in list(CASES.items()) + list(WORKS.items()):
        print(json.dumps({"case": name, "started": True}), flush=True)
        try:
            call()
            result = "no error"
        except errors.FastnnError as e:
            result = f"fastnn:{type(e).__name__}:{e}"
        except Exception as e:
            result = f"other:{type(e).__name__}:{e}"
        print(json.dumps({"case": name, "result": result, "must_fail": name in CASES}), flush=True)
''')


def run_probe(backend):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-c", PROBE, backend], capture_output=True, text=True, env=env,
                          timeout=900)


# What each bad call's message must say: the layer (or loss, or argument) and what it expected, or the
# valid range of labels. The same on every backend: the checks run before any kernel.
EXPECTED = {
    "loss label = K": "labels: class indices must lie in [0, 10), found 1..10",
    "loss label huge": "labels: class indices must lie in [0, 10), found 1..1000000000",
    "loss label < 0": "labels: class indices must lie in [0, 10), found -1..3",
    "loss float labels": "SoftmaxCrossEntropy: expected labels of shape (4,), integer class indices",
    "loss too few labels": "SoftmaxCrossEntropy: expected labels of shape (4,), integer class indices for logits "
                           "(4, 10), got (3,)",
    "loss 1-d logits": "SoftmaxCrossEntropy: expected logits (N, K)",
    "loss int logits": "SoftmaxCrossEntropy: expected logits (N, K) as a non-empty floating-point array",
    "loss list labels": "SoftmaxCrossEntropy: expected labels of shape (4,), integer class indices",
    "mse shapes": "MeanSquaredError: prediction (4, 10) and target (4, 9) differ",
    "mse int target": "MeanSquaredError: expected the target as a non-empty floating-point array",
    "dense features": "Dense: expected input of shape (N, 8), got (2, 9)",
    "dense float64": "Dense: expected float32 input, got float64",
    "dense dy shape": "Dense: expected a gradient of shape (2, 3)",
    "dense dy float64": "Dense: expected a float32 gradient, got float64",
    "dense dy int": "Dense: expected a float32 gradient, got int32",
    "conv channels": "Conv2D: expected input of shape (N, 3, H, W), got (2, 1, 8, 8)",
    "conv too small": "Conv2D: a 4x4 input is smaller than the 5x5 kernel",
    "conv 3-d": "Conv2D: expected input of shape (N, 1, H, W), got (1, 8, 8)",
    "conv float64": "Conv2D: expected float32 input, got float64",
    "conv dy shape": "Conv2D: expected a gradient of shape (2, 4, 6, 6)",
    "conv dy float64": "Conv2D: expected a float32 gradient, got float64",
    "maxpool 3-d": "MaxPool2D: expected input of shape (N, C, H, W), got (2, 8, 8)",
    "maxpool too small": "MaxPool2D: a 2x2 input is smaller than the 3x3 window",
    "maxpool int": "MaxPool2D: expected floating-point input, got int32",
    "maxpool dy shape": "MaxPool2D: expected a gradient of shape (2, 1, 2, 2)",
    "avgpool dy int": "AvgPool2D: expected a floating-point gradient, got int32",
    "relu int": "ReLU: expected floating-point input, got int64",
    "relu dy shape": "ReLU: expected a gradient of shape (2, 3)",
    "sigmoid empty": "Sigmoid: expected input of shape (N, ...), got (0, 3)",
    "tanh dy int": "Tanh: expected a floating-point gradient, got int64",
    "dropout int": "Dropout: expected floating-point input, got int64",
    "batchnorm features": "BatchNorm: expected input of shape (N, 4) or (N, 4, H, W), got (2, 5)",
    "batchnorm dy shape": "BatchNorm: expected a gradient of shape (3, 4)",
    "flatten dy shape": "Flatten: expected a gradient of shape (2, 4)",
    "model forward shape": "model: expected input of shape (N, 1, 12, 12)",
    "model forward float64": "model: expected float32 input, got float64",
    "model backward shape": "Dense: expected a gradient of shape (4, 10)",
    "model evaluate label": "labels: class indices must lie in [0, 10), found 0..10",
    "model predict float64": "images: expected float32 images, got float64",
    "train_step label": "labels: class indices must lie in [0, 10), found 0..10",  # on cuda: the loss's check
    "train_step label < 0": "labels: class indices must lie in [0, 10), found -3..2",
    "train_step shape": "train_step images: model expects (N, 1, 12, 12)",
    "fit label": "training labels: class indices must lie in [0, 10), found 0..11",
}


def check_results(backend, results):
    """The complaints about the probe's ``results`` ({case: line}): a bad call that raised no fastnn error
    or one whose message lacks its EXPECTED fragment, a call that must work that raised anything."""
    wrong = {}
    for case, line in results.items():
        result = line["result"]
        if not line["must_fail"]:
            if result != "no error":
                wrong[case] = f"must work, got {result}"
        elif not result.startswith("fastnn:"):
            wrong[case] = f"expected a fastnn error, got {result}"
        elif EXPECTED[case] not in result:
            wrong[case] = f"the message does not say {EXPECTED[case]!r}: {result}"
    return [f"{backend}: {case}: {why}" for case, why in wrong.items()]


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython", "cuda"])
def test_bad_input_is_a_fastnn_error_on_every_backend(backend):
    load_or_skip(backend)
    done = run_probe(backend)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    started = [line["case"] for line in lines if line.get("started")]
    results = {line["case"]: line for line in lines if "result" in line}
    assert done.returncode == 0, (f"the process died (exit {done.returncode}) during {started[-1:]!r}:\n"
                                  f"{done.stderr[-2000:]}")
    assert len(results) == len(started) > 40
    assert {case for case, line in results.items() if line["must_fail"]} == set(EXPECTED)  # every case has one
    wrong = check_results(backend, results)
    assert not wrong, "these calls did not behave:\n  " + "\n  ".join(wrong)


def test_the_checks_catch_a_must_work_call_that_raises_and_a_message_that_names_nothing():
    """check_results itself: what the old test let through (an "other:" exception from a call that must
    work; a fastnn error that does not say what was wrong) is a complaint."""
    results = {case: {"result": f"fastnn:ShapeError:{fragment}; more", "must_fail": True}
               for case, fragment in EXPECTED.items()}
    results["valid train_step"] = {"result": "no error", "must_fail": False}
    assert check_results("numpy", results) == []
    results["valid train_step"] = {"result": "other:ValueError:operands could not be broadcast", "must_fail": False}
    results["dense features"] = {"result": "fastnn:ShapeError:bad input", "must_fail": True}
    results["conv 3-d"] = {"result": "other:IndexError:tuple index out of range", "must_fail": True}
    assert [line.split(": ")[1] for line in check_results("numpy", results)] == [
        "dense features", "conv 3-d", "valid train_step"]
