"""Chapters 3-6 together: a multi-layer perceptron that reads handwritten digits.

784 -> 256 -> 128 -> 10 with ReLU (He initialisation), Adam (lr 0.001), batches of 100,
on the 60,000 MNIST training images, of which the last 5,000 are held out for validation.
Each epoch prints the training loss falling and the validation and test scores; early
stopping ends the run when the validation loss has not improved for ``--patience``
epochs and goes back to the best epoch's weights. About 98% on the 10,000 test images.

    python examples/mnist_mlp.py [--epochs 8] [--patience 2] [--plot mnist_mlp.png]
"""
import argparse

import numpy as np

import fastnn
from fastnn.plot import plot_history

VALIDATION = 5000


def mlp(seed=0, sizes=(28 * 28, 256, 128, 10)):
    rng = np.random.default_rng(seed)
    layers = [fastnn.Flatten()]
    for d_in, d_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [fastnn.Dense(d_in, d_out, init="he", rng=rng), fastnn.ReLU()]
    layers.append(fastnn.Dense(sizes[-2], sizes[-1], init="he", rng=rng))
    return fastnn.Sequential(layers, input_shape=(1, 28, 28), name="mnist-mlp")


def print_epoch(trainer, m):
    print(f"epoch {m['epoch']:2d}: train loss {m['train_loss']:.4f}  "
          f"val loss {m['val_loss']:.4f} acc {100 * m['val_accuracy']:.2f}%  "
          f"test acc {100 * m['test_accuracy']:.2f}%  ({m['train_seconds']:.1f} s)", flush=True)


def train(x_train, y_train, x_test, y_test, epochs=8, patience=2, seed=0, progress=False, on_epoch_end=print_epoch):
    """Train with early stopping on the last VALIDATION training images; (model, history)."""
    model = mlp(seed)
    trainer = fastnn.Trainer(model, fastnn.Adam(lr=1e-3), batch_size=100, seed=seed, progress=progress)
    history = trainer.fit(x_train[:-VALIDATION], y_train[:-VALIDATION], epochs=epochs,
                          validation=(x_train[-VALIDATION:], y_train[-VALIDATION:]), test=(x_test, y_test),
                          patience=patience, monitor="val_loss", on_epoch_end=on_epoch_end)
    return model, history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="directory with the MNIST IDX files (default: FASTNN_DATA, then the cache)")
    parser.add_argument("--plot", metavar="PNG", help="draw loss and accuracy per epoch")
    args = parser.parse_args(argv)

    x_train, y_train, x_test, y_test = fastnn.load_mnist("mnist", args.data)
    fastnn.backends.get()
    threads = fastnn.set_threads()  # FASTNN_NUM_THREADS, else every core: the backend's threads and BLAS's together
    print(f"backend {fastnn.backends.active_name()}, {threads} threads; {len(x_train) - VALIDATION} training, "
          f"{VALIDATION} validation, {len(x_test)} test images")
    print(mlp(args.seed).summary())
    model, history = train(x_train, y_train, x_test, y_test, args.epochs, args.patience, args.seed, progress=True)
    if history[-1].get("early_stop"):
        print(f"stopped early after epoch {history[-1]['epoch']}: no better validation loss in {args.patience}")
    best = min(history, key=lambda m: m["val_loss"])
    _, accuracy = model.evaluate(x_test, y_test)
    print(f"kept the weights of epoch {best['epoch']} (validation loss {best['val_loss']:.4f}): "
          f"test accuracy {100 * accuracy:.2f}%")
    if args.plot:
        plot_history(history, args.plot, title="MNIST MLP 784-256-128-10, Adam")
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
