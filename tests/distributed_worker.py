"""Run by tests/test_distributed.py, alone or under mpiexec: train a named model for one epoch on
the first N real MNIST training images and write its parameters (rank 0).

    python tests/distributed_worker.py simple-cnn 6000 out.npz
    mpiexec -n 2 python tests/distributed_worker.py simple-cnn 6000 out.npz --distributed

``bn-mlp`` (784 -> 64 -> BatchNorm -> ReLU -> 10) is there for BatchNorm, whose running
statistics the ranks average. Dropout is switched off (p = 0): each rank draws its own masks, so only without dropout do a
2-rank run and a 1-process run compute the same function. Every rank writes whether the ranks
ended with the same parameters and buffers (``in_sync``), found by comparing them over MPI.
"""
import argparse

import numpy as np

from fastnn import config, models, optim, threads
from fastnn.data import load_mnist
from fastnn.layers import BatchNorm, Dense, Dropout, Flatten, ReLU
from fastnn.model import Sequential
from fastnn.train import Trainer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("images", type=int)
    p.add_argument("out")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--distributed", action="store_true")
    args = p.parse_args()
    threads.set_threads(1)
    parallel = None
    if args.distributed:
        from fastnn.distributed import DataParallel
        parallel = DataParallel.launched()
    if args.model == "bn-mlp":
        rng = np.random.default_rng(0)
        model = Sequential([Flatten(), Dense(784, 64, rng=rng), BatchNorm(64), ReLU(), Dense(64, 10, rng=rng)],
                           models.MNIST_SHAPE, name="bn-mlp", rng=rng)
    else:
        model = models.build(args.model, seed=0)
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.p = 0.0
    x, y, _, _ = load_mnist("mnist", config.data_dir(), download_missing=False, progress=False)
    trainer = Trainer(model, optim.make("adam"), batch_size=args.batch_size, seed=0, progress=False,
                      parallel=parallel)
    trainer.fit(x[:args.images], y[:args.images], epochs=1)
    in_sync = True if parallel is None else parallel.in_sync(model)
    if parallel is None or parallel.is_root:
        np.savez(args.out, in_sync=in_sync, world_size=1 if parallel is None else parallel.size,
                 **model.state_arrays())


if __name__ == "__main__":
    main()
