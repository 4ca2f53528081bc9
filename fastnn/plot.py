"""Loss and accuracy curves as a PNG (needs the ``plot`` extra: matplotlib)."""
from .errors import ConfigError


def require_matplotlib():
    """Import matplotlib with a headless backend, or say how to install it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError('plotting needs matplotlib, the [plot] extra: pip install "fastnn[plot]" '
                          '(in a checkout: pip install -e ".[plot]")') from e
    return plt


def plot_history(history, path, title="fastnn training"):
    """Two panels: train/test loss per epoch, and test accuracy per epoch."""
    plt = require_matplotlib()
    epochs = [m["epoch"] for m in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation"), ("test_loss", "test")):
        if key in history[0]:
            left.plot(epochs, [m[key] for m in history], marker="o", label=label)
    left.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    left.legend()
    for key, label in (("val_accuracy", "validation"), ("test_accuracy", "test")):
        if key in history[0]:
            right.plot(epochs, [100 * m[key] for m in history], marker="o", label=label)
    right.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.set_xticks(epochs)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
