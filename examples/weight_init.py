"""Chapter 6: why the initial weights matter.

The same 5-layer network (784-100-100-100-100-10, ReLU, plain SGD with lr 0.01, batches
of 128) trained from three starting points:

* std 0.01 (small random weights): each layer shrinks its activations 100-fold, the
  signal and the gradients vanish, and the loss sits at log(10) = 2.30, chance level;
* Xavier (std sqrt(1/n)): keeps the spread for sigmoid/tanh; each ReLU layer halves the variance;
* He (std sqrt(2/n)): made for ReLU, learns fastest.

    python examples/weight_init.py [--steps 2000] [--plot weight_init.png]
"""
import argparse
import math

import numpy as np

import fastnn
from fastnn.plot import require_matplotlib

INITS = {"std 0.01": 0.01, "Xavier": "xavier", "He": "he"}


def deep_mlp(init, seed=0, hidden=(100, 100, 100, 100)):
    rng = np.random.default_rng(seed)
    sizes = (28 * 28,) + tuple(hidden)
    layers = [fastnn.Flatten()]
    for d_in, d_out in zip(sizes, sizes[1:]):
        layers += [fastnn.Dense(d_in, d_out, init=init, rng=rng), fastnn.ReLU()]
    layers.append(fastnn.Dense(sizes[-1], 10, init=init, rng=rng))
    return fastnn.Sequential(layers, input_shape=(1, 28, 28), name=f"mlp-{init}")


def loss_curve(model, x, y, steps, batch_size=128, lr=0.01, seed=0):
    """The training loss of every step: forward, loss, backward, SGD update, on batches drawn
    from a fresh permutation each epoch (every image once per pass)."""
    K = fastnn.backends.get()
    model.to_backend()
    loss_layer, optimizer = fastnn.SoftmaxCrossEntropy(), fastnn.SGD(lr=lr)
    x_dev, y_dev = K.to_device(x), K.to_device(y)
    rng = np.random.default_rng(seed)
    order, position, losses = rng.permutation(len(x)), 0, []
    for _ in range(steps):
        if position + batch_size > len(x):
            order, position = rng.permutation(len(x)), 0
        idx = order[position:position + batch_size]
        position += batch_size
        logits = model.forward(K.gather(x_dev, idx))
        losses.append(loss_layer.forward(logits, K.gather(y_dev, idx)))
        model.backward(loss_layer.backward())
        optimizer.step(model)
    return np.array(losses)


def compare(x, y, steps, seed=0):
    """{init name: loss per step} for the same data and batches."""
    return {name: loss_curve(deep_mlp(init, seed), x, y, steps, seed=seed) for name, init in INITS.items()}


def smooth(values, width=20):
    width = max(1, min(width, len(values)))
    return np.convolve(values, np.ones(width) / width, mode="valid")


def plot_curves(curves, filename):
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, losses in curves.items():
        ax.plot(losses, alpha=0.25)
        ax.plot(np.arange(len(smooth(losses))) + 10, smooth(losses), color=ax.lines[-1].get_color(), label=name)
    ax.axhline(math.log(10), color="0.5", linestyle="--", linewidth=1, label="log(10): chance")
    ax.set(xlabel="step (batch of 128)", ylabel="training loss (cross-entropy)", ylim=(0, 2.6),
           title="5-layer ReLU MLP on MNIST, SGD lr 0.01: initial weight std")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(filename, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--data", help="directory with the MNIST IDX files (default: FASTNN_DATA, then the cache)")
    parser.add_argument("--plot", metavar="PNG", help="draw the loss curves")
    args = parser.parse_args(argv)

    x_train, y_train, _, _ = fastnn.load_mnist("mnist", args.data)
    fastnn.backends.get()
    fastnn.set_threads()  # FASTNN_NUM_THREADS (else every core) for the backend's threads and BLAS together
    curves = compare(x_train, y_train, args.steps)
    print("mean training loss over the 20 steps up to:")
    for step in sorted({19, 100, 250, 500, 1000, args.steps - 1} & set(range(19, args.steps))):
        print(f"  step {step:5d}: " + "  ".join(f"{name} {c[step - 19:step + 1].mean():.3f}"
                                                for name, c in curves.items()))
    if args.plot:
        plot_curves(curves, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
