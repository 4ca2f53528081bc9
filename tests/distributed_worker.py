"""Run by tests/test_distributed.py under ``mpiexec -n 2``: data-parallel training next to one
process that does the same, on the first real MNIST training images.

    mpiexec -n 2 python tests/distributed_worker.py step OUT mlp:25 pytorch-net:100 bn-mlp:100
    mpiexec -n 2 python tests/distributed_worker.py epoch OUT pytorch-net 6000
    mpiexec -n 2 python tests/distributed_worker.py nan OUT 1000 537

``step``: for each MODEL:N, one SGD step from the model's seed-0 parameters on the global batch of
the first N images: by the 2 ranks (``MODEL/two/...``, with ``MODEL/in_sync``), then on rank 0 by
one process on the whole batch (``MODEL/one/...``) and on each rank's slice alone
(``MODEL/slice0/...``, ``MODEL/slice1/...``): gradients (``grad/KEY``), and parameters and buffers
after the update (``param/KEY``, ``buffer/KEY``). Also the scale of the float32 rounding in each
gradient (``MODEL/abs/KEY``, ``MODEL/terms/KEY``: see ``summed_terms``).

``epoch``: one epoch with Adam, global batches of 100: by the 2 ranks (``two/``, ``in_sync``); then
by one process on the same batches, rank 0 (``one/``), and at the same time on rank 1 by one
process on 2 threads that sees each batch's images in reverse order (``reversed/``): the same sums
added in another order and grouping, so the test can measure how far rounding alone moves an epoch.

``nan``: mlp trains one epoch on the first N images with image I made NaN, which lands in one
rank's slice only. Each rank writes what stopped it to OUT.RANK.json: the error, the optimizer's
steps done, its own slice's last loss, and a digest of its parameters. It calls no collective
after the error: ranks that stopped at different steps would wait for each other.

``bn-mlp`` (784 -> 64 -> BatchNorm -> ReLU -> 10) is there for BatchNorm, whose running statistics
the ranks average. Dropout is switched off (p = 0): each rank draws its own masks, so only without
dropout do a 2-rank run and a 1-process run compute the same function. Every process runs one
thread (but the epoch's reordered run); rank 0 writes OUT (.npz) in the ``step`` and ``epoch`` modes.
"""
import argparse
import hashlib
import json

import numpy as np

from fastnn import backends, config, models, optim, threads
from fastnn.data import load_mnist
from fastnn.distributed import DataParallel, split
from fastnn.errors import FastnnError
from fastnn.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, ReLU
from fastnn.model import Sequential
from fastnn.train import Trainer

STEP_LR = 0.1


def build(name):
    if name == "bn-mlp":
        rng = np.random.default_rng(0)
        model = Sequential([Flatten(), Dense(784, 64, rng=rng), BatchNorm(64), ReLU(), Dense(64, 10, rng=rng)],
                           models.MNIST_SHAPE, name="bn-mlp", rng=rng)
    else:
        model = models.build(name, seed=0)
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.p = 0.0
    return model


def state(model, prefix):
    """The model's gradients, parameters and buffers, named ``prefix/grad/KEY``, ``prefix/param/KEY``
    and ``prefix/buffer/KEY``."""
    arrays = {f"{prefix}/grad/{key}": grad.copy() for key, _, grad in model.param_items()}
    arrays.update({f"{prefix}/{key}": value for key, value in model.state_arrays().items()})
    return arrays


def summed_terms(name, x, y):
    """Per gradient KEY: (A, n). Each entry of a gradient is a float32 sum over the batch (and, for
    a convolution, the output positions) of products of the layer's input and its output's gradient;
    A = the same sum of their absolute values, |x|^T |dy|, the scale of its rounding error. n counts
    the additions behind an entry: the terms of its own sum, plus those of every layer's sums in the
    passes that made those terms (each layer's fan-in forward and fan-out backward)."""
    K = backends.get()
    model = build(name)
    model.set_fusion(False)  # every layer alone: each sees its own input and its output's gradient
    seen = {}
    for i, layer in enumerate(model.layers):
        if layer.params:
            def forward(x, train=True, i=i, inner=layer.forward):
                seen[i] = [x]
                return inner(x, train)

            def backward(dy, i=i, inner=layer.backward):
                seen[i].append(dy)
                return inner(dy)
            layer.forward, layer.backward = forward, backward
    trainer = Trainer(model, optim.make("sgd", lr=STEP_LR), seed=0, progress=False)
    trainer.train_step(x, y)
    # every layer's fan-in (its forward sums) + fan-out (its backward sums): W.size / W.shape[0] +
    # W.size / W.shape[1], for a Dense W (in, out) and a Conv2D W (out, in, kh, kw) alike
    chain = sum(W.size // W.shape[0] + W.size // W.shape[1]
                for W in (layer.params["W"] for layer in model.layers if layer.params))
    found = {}
    for i, layer in enumerate(model.layers):
        if not layer.params:
            continue
        inputs, dy = (np.abs(a) for a in seen[i])
        if isinstance(layer, Dense):
            _, a_W, a_b = K.dense_backward(dy, inputs, layer.params["W"], need_dx=False)
            terms = dy.shape[0]
        elif isinstance(layer, Conv2D):
            _, cache = K.conv2d_forward(inputs, layer.params["W"], layer.params["b"], layer.stride, layer.pad)
            _, a_W, a_b = K.conv2d_backward(dy, cache, need_dx=False)
            terms = dy.shape[0] * dy.shape[2] * dy.shape[3]
        else:
            raise TypeError(f"summed_terms knows Dense and Conv2D, not {type(layer).__name__}")
        found[f"{i}.W"], found[f"{i}.b"] = (a_W, terms + chain), (a_b, terms + chain)
    return found


def one_step(specs, x, y):
    result = {}
    for spec in specs:
        name, n = spec.split(":")
        n = int(n)
        batch, labels = x[:n], y[:n]
        parallel = DataParallel.launched()  # one per model: its Allreduce buffer fits one model
        model = build(name)
        trainer = Trainer(model, optim.make("sgd", lr=STEP_LR), seed=0, progress=False, parallel=parallel)
        mine = split(n, parallel.size, parallel.rank)
        trainer.train_step(batch[mine], labels[mine], global_size=n)
        in_sync = parallel.in_sync(model)
        if not parallel.is_root:
            continue
        result[f"{name}/in_sync"] = in_sync
        result.update(state(model, f"{name}/two"))
        for run, images in [("one", slice(0, n))] + [(f"slice{r}", split(n, parallel.size, r))
                                                     for r in range(parallel.size)]:
            model = build(name)
            alone = Trainer(model, optim.make("sgd", lr=STEP_LR), seed=0, progress=False)
            alone.train_step(batch[images], labels[images])
            result.update(state(model, f"{name}/{run}"))
        if name != "bn-mlp":
            for key, (a, terms) in summed_terms(name, batch, labels).items():
                result[f"{name}/abs/{key}"], result[f"{name}/terms/{key}"] = a, terms
    return result


def one_epoch(name, n, x, y):
    x, y = x[:n], y[:n]
    parallel = DataParallel.launched()
    model = build(name)
    Trainer(model, optim.make("adam"), seed=0, progress=False, parallel=parallel).fit(x, y, epochs=1)
    result = {"in_sync": parallel.in_sync(model), **state(model, "two")}
    model = build(name)
    trainer = Trainer(model, optim.make("adam"), seed=0, progress=False)
    run = "one" if parallel.is_root else "reversed"
    if run == "reversed":  # the same batches, each one's images in reverse order, on 2 threads
        # two threads split each batch's images in halves, as the ranks do (per-thread sums, then
        # their sum): one process whose sums run in the 2-rank grouping as well as another order.
        # Reversal alone missed that grouping: on cython, pytorch-net's epoch moved 5e-7 under it
        # and 2.8e-4 under 2 ranks or 2 threads (a max-pool or ReLU decision flipped by rounding)
        threads.set_threads(2)
        step = trainer.train_step

        def reversed_step(xb, yb, **kwargs):
            return step(np.ascontiguousarray(xb[::-1]), np.ascontiguousarray(yb[::-1]), **kwargs)
        trainer.train_step = reversed_step
    trainer.fit(x, y, epochs=1)
    for arrays in parallel.gather(state(model, run)) or []:
        result.update(arrays)
    return result


def stop_on_nan(out, n, poisoned, x, y):
    x = x[:n].copy()
    x[poisoned] = np.nan
    parallel = DataParallel.launched()
    model = build("mlp")
    trainer = Trainer(model, optim.make("adam"), seed=0, progress=False, parallel=parallel)
    own_losses, loss = [], trainer.loss.forward

    def own_loss(*args, **kwargs):  # this rank's slice's loss, before the Allreduce
        own_losses.append(loss(*args, **kwargs))
        return own_losses[-1]
    trainer.loss.forward = own_loss
    stop = {"error": None, "message": None}
    try:
        trainer.fit(x, y[:n], epochs=1)
    except FastnnError as e:
        stop = {"error": type(e).__name__, "message": str(e)}
    params = model.state_arrays()
    stop.update(steps=trainer.optimizer.steps, own_loss=float(own_losses[-1]),
                finite=bool(all(np.isfinite(a).all() for a in params.values())),
                digest=hashlib.sha256(b"".join(a.tobytes() for a in params.values())).hexdigest())
    with open(f"{out}.{parallel.rank}.json", "w") as f:
        json.dump(stop, f, allow_nan=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["step", "epoch", "nan"])
    p.add_argument("out")
    p.add_argument("args", nargs="+")
    args = p.parse_args()
    threads.set_threads(1)
    is_root = DataParallel.launched().is_root
    x, y, _, _ = load_mnist("mnist", config.data_dir(), download_missing=False, progress=False)
    if args.mode == "nan":
        stop_on_nan(args.out, int(args.args[0]), int(args.args[1]), x, y)
        return
    result = one_step(args.args, x, y) if args.mode == "step" else one_epoch(args.args[0], int(args.args[1]), x, y)
    if is_root:
        np.savez(args.out, **result)


if __name__ == "__main__":
    main()
