"""Every hot kernel of one backend, on the shapes of simple-cnn (batch 100) and pytorch-net (batch 64),
and deep-cnn's convolutions (batch 100). One backend per process (benchmarks/conftest.py says why,
and how to compare the backends' saved runs):

    pytest benchmarks --benchmark-only --backend cython                          # all kernels
    pytest benchmarks --benchmark-only --backend numba -k "simple-cnn and conv"  # a part

A test's name and ``benchmark.group`` ("<model> | <layer> | <kernel>") are the same in every
backend's run, so a comparison of saved runs grouped by group puts the backends of one kernel
and shape side by side. Each kernel runs once before timing (Numba compiles on the first call;
that is left out). CUDA launches return at once: the timed call ends with a synchronisation so
the clock stops when the GPU is done.
"""
import numpy as np
import pytest

SEED = 20261123


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# Each case: (model, layer, kernel, setup). setup(K, rng) -> a function of no arguments that
# runs the kernel once on arrays already in K's memory (forward caches made with K itself).

def conv(x_shape, w_shape, stride=1, pad=0, need_dx=True):
    def forward(K, rng):
        x, W, b = (K.to_device(a) for a in (randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, w_shape[0])))
        return lambda: K.conv2d_forward(x, W, b, stride, pad)

    def backward(K, rng):
        x, W, b = (K.to_device(a) for a in (randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, w_shape[0])))
        y, cache = K.conv2d_forward(x, W, b, stride, pad)
        dy = K.to_device(randn(rng, *K.to_host(y).shape))
        return lambda: K.conv2d_backward(dy, cache, need_dx=need_dx)
    return forward, backward


def model_convs(model_name, batch):
    """(x_shape, w_shape, stride, pad, need_dx) of every Conv2D of a named model, read off the
    model as it is built, so the benchmarked shapes are the ones training runs."""
    from fastnn import models
    from fastnn.layers import Conv2D

    model = models.build(model_name)
    shape, convs = model.input_shape, []
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            convs.append(((batch,) + shape, tuple(layer.params["W"].shape), layer.stride, layer.pad, layer.need_dx))
        shape = layer.output_shape(shape)
    return convs


def pool(x_shape, size=2):
    def forward(K, rng):
        x = K.to_device(randn(rng, *x_shape))
        return lambda: K.maxpool2d_forward(x, size, size, 0)

    def backward(K, rng):
        y, cache = K.maxpool2d_forward(K.to_device(randn(rng, *x_shape)), size, size, 0)
        dy = K.to_device(randn(rng, *K.to_host(y).shape))
        return lambda: K.maxpool2d_backward(dy, cache)
    return forward, backward


def relu(shape):
    def forward(K, rng):
        x = K.to_device(randn(rng, *shape))
        return lambda: K.relu_forward(x)

    def backward(K, rng):
        dy, y = K.to_device(randn(rng, *shape)), K.relu_forward(K.to_device(randn(rng, *shape)))
        return lambda: K.relu_backward(dy, y)
    return forward, backward


def dense(n, d, m):
    def forward(K, rng):
        x, W, b = (K.to_device(a) for a in (randn(rng, n, d), randn(rng, d, m), randn(rng, m)))
        return lambda: K.dense_forward(x, W, b)

    def backward(K, rng):
        dy, x, W = (K.to_device(a) for a in (randn(rng, n, m), randn(rng, n, d), randn(rng, d, m)))
        return lambda: K.dense_backward(dy, x, W)
    return forward, backward


def dropout(shape, p):
    def forward(K, rng):
        x = K.to_device(randn(rng, *shape))
        mask = K.dropout_mask(shape, p, rng)
        return lambda: K.dropout_forward(x, mask)

    def backward(K, rng):
        dy = K.to_device(randn(rng, *shape))
        mask = K.dropout_mask(shape, p, rng)
        return lambda: K.dropout_backward(dy, mask)

    def make_mask(K, rng):
        return lambda: K.dropout_mask(shape, p, rng)
    return make_mask, forward, backward


def softmax_ce(n, k):
    def forward(K, rng):
        logits, labels = K.to_device(randn(rng, n, k)), K.to_device(rng.integers(0, k, n))
        return lambda: K.softmax_cross_entropy(logits, labels)

    def backward(K, rng):
        _, cache = K.softmax_cross_entropy(K.to_device(randn(rng, n, k)), K.to_device(rng.integers(0, k, n)))
        return lambda: K.softmax_cross_entropy_backward(cache)
    return forward, backward


def adam(shape):
    def update(K, rng):
        p, g, m, v = (K.to_device(a) for a in (randn(rng, *shape), randn(rng, *shape),
                                               np.zeros(shape, np.float32), np.zeros(shape, np.float32)))
        return lambda: K.adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 1, 0.0)
    return update


def adadelta(shape):
    def update(K, rng):
        p, g, s, u = (K.to_device(a) for a in (randn(rng, *shape), randn(rng, *shape),
                                               np.zeros(shape, np.float32), np.zeros(shape, np.float32)))
        return lambda: K.adadelta_update(p, g, s, u, 1.0, 0.9, 1e-6, 0.0)
    return update


def _cases():
    cases = []

    def add(model, layer, pair, names=("forward", "backward")):
        for name, setup in zip(names, pair):
            cases.append((model, layer, name, setup))

    # simple-cnn, batch 100: conv 1->30 5x5, relu, maxpool 2, dense 4320->100, relu, dense 100->10, Adam
    m = "simple-cnn"
    add(m, "conv1 1->30 5x5", conv((100, 1, 28, 28), (30, 1, 5, 5), need_dx=False),
        ("conv2d_forward", "conv2d_backward (no dx)"))
    add(m, "relu (100,30,24,24)", relu((100, 30, 24, 24)), ("relu_forward", "relu_backward"))
    add(m, "maxpool 2 (100,30,24,24)", pool((100, 30, 24, 24)), ("maxpool2d_forward", "maxpool2d_backward"))
    add(m, "dense 4320->100", dense(100, 4320, 100), ("dense_forward", "dense_backward"))
    add(m, "dense 100->10", dense(100, 100, 10), ("dense_forward", "dense_backward"))
    add(m, "loss (100,10)", softmax_ce(100, 10), ("softmax_cross_entropy", "softmax_cross_entropy_backward"))
    add(m, "adam (4320,100)", (adam((4320, 100)),), ("adam_update",))
    # pytorch-net, batch 64: conv 1->32 3x3, relu, conv 32->64 3x3, relu, maxpool 2, dropout,
    # dense 9216->128, relu, dropout, dense 128->10, Adadelta
    m = "pytorch-net"
    add(m, "conv1 1->32 3x3", conv((64, 1, 28, 28), (32, 1, 3, 3), need_dx=False),
        ("conv2d_forward", "conv2d_backward (no dx)"))
    add(m, "relu (64,32,26,26)", relu((64, 32, 26, 26)), ("relu_forward", "relu_backward"))
    add(m, "conv2 32->64 3x3", conv((64, 32, 26, 26), (64, 32, 3, 3)), ("conv2d_forward", "conv2d_backward"))
    add(m, "relu (64,64,24,24)", relu((64, 64, 24, 24)), ("relu_forward", "relu_backward"))
    add(m, "maxpool 2 (64,64,24,24)", pool((64, 64, 24, 24)), ("maxpool2d_forward", "maxpool2d_backward"))
    add(m, "dropout 0.25 (64,64,12,12)", dropout((64, 64, 12, 12), 0.25),
        ("dropout_mask", "dropout_forward", "dropout_backward"))
    add(m, "dense 9216->128", dense(64, 9216, 128), ("dense_forward", "dense_backward"))
    add(m, "dense 128->10", dense(64, 128, 10), ("dense_forward", "dense_backward"))
    add(m, "loss (64,10)", softmax_ce(64, 10), ("softmax_cross_entropy", "softmax_cross_entropy_backward"))
    add(m, "adadelta (9216,128)", (adadelta((9216, 128)),), ("adadelta_update",))
    # deep-cnn, batch 100: six 3x3 convs 1->16->16 (28x28), 16->32->32 (14x14; the second pads by 2,
    # so 14x14 -> 16x16), 32->64->64 (8x8), each pair followed by a max-pool
    m = "deep-cnn"
    for i, (x_shape, w_shape, stride, pad, need_dx) in enumerate(model_convs(m, 100), 1):
        f, c, k, _ = w_shape
        add(m, f"conv{i} {c}->{f} {k}x{k} {x_shape[2]}x{x_shape[3]} pad {pad}",
            conv(x_shape, w_shape, stride, pad, need_dx),
            ("conv2d_forward", "conv2d_backward" if need_dx else "conv2d_backward (no dx)"))
    return cases


CASES = _cases()


def case_id(model, layer, kernel):
    """"simple-cnn-dense_4320->100-dense_forward": unique, and the same whatever the backend."""
    return f"{model}-{layer.replace(' ', '_').replace('(', '').replace(')', '')}-{kernel.split()[0]}"


@pytest.mark.parametrize("model,layer,kernel,setup", CASES, ids=[case_id(m, layer, k) for m, layer, k, _ in CASES])
def test_kernel(benchmark, kernels, model, layer, kernel, setup):
    K = kernels
    run = setup(K, np.random.default_rng(SEED))
    sync = getattr(K, "synchronize", None)
    if sync is not None:  # cuda: the clock stops when the GPU has finished
        def timed():
            out = run()
            sync()
            return out
    else:
        timed = run
    timed()  # compile (Numba JIT) and warm caches: not timed
    benchmark.group = f"{model} | {layer} | {kernel}"
    benchmark.extra_info.update(backend=K.NAME, model=model, layer=layer, kernel=kernel)
    benchmark(timed)
