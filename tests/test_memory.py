"""Memory: scratch is sized to the work unit (an image, a group of tiles), never to the batch,
and inference keeps no backward state."""
import numpy as np
import pytest

from fastnn import backends, models
from fastnn.errors import ShapeError

from .conftest import load_or_skip


def scratch_bytes():
    from fastnn.backends.numba import _common
    return sum(buf.nbytes for buf in _common._scratch.values())


@pytest.mark.parametrize("model", ["pytorch-net", "deep-cnn"])
def test_inference_at_batch_1000_holds_no_batch_sized_memory(model):
    load_or_skip("numba")
    backends.use("numba")
    from fastnn.backends.numba import _common
    _common._scratch.clear()  # only this model's buffers from here on (earlier tests leave theirs)
    net = models.build(model, seed=0)
    x = np.random.default_rng(0).random((1000, 1, 28, 28), dtype=np.float32)
    small = net.forward(x[:10], train=False)
    after_small = scratch_bytes()
    assert after_small > 0  # the kernels did take their scratch from the pool (else 0 == 0 below)
    big = net.forward(x, train=False)
    # the batch grew 100x; the scratch its kernels asked for did not grow at all
    assert scratch_bytes() == after_small
    assert scratch_bytes() < 16 << 20
    np.testing.assert_allclose(big[:10], small, rtol=1e-5, atol=1e-6)
    for layer in net.layers:  # no layer keeps its input, output or cache after inference
        for name in ("x", "y", "cache", "mask"):
            assert getattr(layer, name, None) is None, f"{layer.name}.{name} kept after inference"
    assert any(step.kernel for step in net.plan())
    for step in net.plan():  # nor does a fused block
        for name in ("x", "y", "cache"):
            assert getattr(step, name, None) is None, f"{step!r}: {name} kept after inference"


def test_backward_after_inference_is_a_clear_error():
    backends.use("numpy")
    net = models.build("simple-cnn", seed=0)
    y = net.forward(np.zeros((2, 1, 28, 28), np.float32), train=False)
    with pytest.raises(ShapeError, match="train=False"):
        net.backward(np.ones_like(y))


@pytest.mark.parametrize("model", ["pytorch-net", "deep-cnn"])
def test_cython_work_arrays_do_not_grow_with_the_batch(model):
    load_or_skip("cython")
    backends.use("cython")
    from fastnn.backends.cython import _prep

    def work_bytes():
        return sum(buf.nbytes for buf in getattr(_prep._work, "pool", {}).values())

    # only this model's buffers from here on: a larger one an earlier test left would hide growth
    getattr(_prep._work, "pool", {}).clear()
    net = models.build(model, seed=0)
    x = np.random.default_rng(0).random((1000, 1, 28, 28), dtype=np.float32)
    net.forward(x[:10], train=False)
    after_small = work_bytes()
    assert after_small > 0  # the kernels did take their work arrays from the pool (else 0 == 0 below)
    net.forward(x, train=False)
    assert work_bytes() == after_small < 16 << 20  # sized to an image per thread, not to the batch
