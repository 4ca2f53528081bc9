"""Chapter 6: overfitting, and what holds it back.

The textbook's overfitting set-up: a deep network (784 -> six hidden layers of 100 -> 10,
ReLU) trained with SGD (lr 0.01) on only 300 MNIST images for 200 epochs. It learns
the 300 by heart (train accuracy near 100%) while test accuracy stays far lower. Then the
same run with

* weight decay: the L2 penalty lam/2 * sum W^2 (lam 0.1; fastnn.regularization.L2, the
  same as an optimizer's weight_decay on the weights only),
* the L1 penalty lam * sum |W| (fastnn.regularization.L1), which drives weights to zero,
* elastic net (both),
* dropout (fastnn.Dropout(0.15) after every hidden ReLU),

each of which narrows the gap between train and test accuracy. The penalties join the
loss and the gradients through ``Trainer(..., regularizer=...)``.

Then batch normalisation: the same deep network on 1000 images with a BatchNorm before
every ReLU learns, where without it too small initial weights (std 0.01, 0.1) make the
signal vanish and it learns little or nothing in 20 epochs.

    python examples/regularization.py [--epochs 200] [--plot overfitting.png]
"""
import argparse

import numpy as np

import fastnn
from fastnn.plot import require_matplotlib
from fastnn.regularization import L1, L2, ElasticNet

HIDDEN = (100,) * 6


def deep_mlp(seed=0, dropout=0.0, batchnorm=False, init="he", hidden=HIDDEN):
    rng = np.random.default_rng(seed)
    sizes = (28 * 28,) + tuple(hidden)
    layers = [fastnn.Flatten()]
    for d_in, d_out in zip(sizes, sizes[1:]):
        layers.append(fastnn.Dense(d_in, d_out, init=init, rng=rng))
        if batchnorm:
            layers.append(fastnn.BatchNorm(d_out))
        layers.append(fastnn.ReLU())
        if dropout:
            layers.append(fastnn.Dropout(dropout))
    layers.append(fastnn.Dense(sizes[-1], 10, init=init, rng=rng))
    return fastnn.Sequential(layers, input_shape=(1, 28, 28), name="deep-mlp")


SETTINGS = {  # name: (regularizer, dropout)
    "no regularisation": (None, 0.0),
    "weight decay (L2 0.1)": (L2(0.1), 0.0),
    "L1 0.005": (L1(0.005), 0.0),
    "elastic net (L1 0.002, L2 0.05)": (ElasticNet(0.002, 0.05), 0.0),
    "dropout 0.15": (None, 0.15),
}


def train_small(x_train, y_train, x_test=None, y_test=None, regularizer=None, dropout=0.0, epochs=200, seed=0,
                lr=0.01, eval_every=10, **model_args):
    """Train deep_mlp on a small set with SGD; (model, [(epoch, train accuracy, test accuracy)]),
    the accuracies measured every ``eval_every`` epochs and after the last (test: None without
    a test set)."""
    model = deep_mlp(seed, dropout=dropout, **model_args)
    trainer = fastnn.Trainer(model, fastnn.SGD(lr=lr), batch_size=100, seed=seed, progress=False,
                             regularizer=regularizer)
    curve = []

    def record(trainer, metrics):
        epoch = metrics["epoch"]
        if epoch % eval_every == 0 or epoch == epochs:
            test = model.evaluate(x_test, y_test)[1] if x_test is not None else None
            curve.append((epoch, model.evaluate(x_train, y_train)[1], test))

    trainer.fit(x_train, y_train, epochs=epochs, on_epoch_end=record)
    return model, curve


def weight_norm(model):
    """sqrt(sum of W^2) over every weight matrix (biases left out)."""
    K = fastnn.backends.get()
    return float(np.sqrt(sum(np.square(K.to_host(p), dtype=np.float64).sum()
                             for key, p, _ in model.param_items() if key.endswith(".W"))))


def near_zero_fraction(model, tol=1e-2):
    """The fraction of weights with |w| < tol."""
    K = fastnn.backends.get()
    weights = np.concatenate([K.to_host(p).ravel() for key, p, _ in model.param_items() if key.endswith(".W")])
    return float(np.mean(np.abs(weights) < tol))


def plot_curves(results, filename):
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.4), sharey=True)
    for ax, (name, (_, curve)) in zip(np.atleast_1d(axes), results.items()):
        epochs, train, test = np.array(curve).T
        ax.plot(epochs, 100 * train, marker=".", label="train")
        ax.plot(epochs, 100 * test, marker=".", label="test")
        ax.set(title=name, xlabel="epoch", ylim=(0, 101))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(loc="lower right")
    fig.suptitle("300 MNIST images, 6x100 ReLU MLP, SGD lr 0.01")
    fig.tight_layout()
    fig.savefig(filename, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--data", help="directory with the MNIST IDX files (default: FASTNN_DATA, then the cache)")
    parser.add_argument("--plot", metavar="PNG", help="draw train and test accuracy per epoch")
    args = parser.parse_args(argv)

    x_train, y_train, x_test, y_test = fastnn.load_mnist("mnist", args.data)
    fastnn.backends.get()
    fastnn.set_threads()  # FASTNN_NUM_THREADS (else every core) for the backend's threads and BLAS together
    small = (x_train[:300], y_train[:300], x_test[:2000], y_test[:2000])
    results = {}
    print(f"300 training images, {args.epochs} epochs (test accuracy on 2000 test images):")
    for name, (regularizer, dropout) in SETTINGS.items():
        model, curve = train_small(*small, regularizer=regularizer, dropout=dropout, epochs=args.epochs)
        results[name] = (model, curve)
        _, train, test = curve[-1]
        print(f"  {name:32s} train {100 * train:5.1f}%  test {100 * test:5.1f}%  gap {100 * (train - test):4.1f}  "
              f"|W| {weight_norm(model):5.1f}  weights below 0.01: {100 * near_zero_fraction(model):4.1f}%")

    print("batch normalisation: 1000 images, 20 epochs, test accuracy (2000 images) by initial weight std:")
    for std in (0.01, 0.1):
        row = []
        for batchnorm in (False, True):
            _, curve = train_small(x_train[:1000], y_train[:1000], x_test[:2000], y_test[:2000], epochs=20,
                                   init=std, batchnorm=batchnorm)
            row.append(f"{'with' if batchnorm else 'without'} BatchNorm {100 * curve[-1][2]:5.1f}%")
        print(f"  std {std:<5g}: " + "   ".join(row))
    if args.plot:
        plot_curves(results, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
