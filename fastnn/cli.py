"""The command line: ``fastnn train | evaluate | info | bench``.

Errors fastnn knows about print one line and exit 1; bad arguments print usage and exit 2.
"""
import argparse
import json
import platform
import sys

import numpy as np

from . import __version__, backends, config
from .errors import FastnnError
from .models import MODELS
from .optim import OPTIMIZERS


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def non_negative_int(text):
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def add_backend_args(p):
    p.add_argument("--backend", choices=config.BACKENDS, help="kernel backend (default: $FASTNN_BACKEND, else "
                   f"{config.DEFAULT_BACKEND})")
    p.add_argument("--threads", type=positive_int, help="threads for Numba, OpenMP and BLAS together "
                   "(default: $FASTNN_NUM_THREADS, else all cores)")


def add_data_args(p):
    p.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    p.add_argument("--data", metavar="DIR", help="directory holding the IDX files (default: $FASTNN_DATA, "
                   "then the user cache; downloaded there if absent)")


def parser():
    top = argparse.ArgumentParser(prog="fastnn", description="Train readable MNIST CNNs on compiled kernels.")
    top.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="{train,evaluate,info,bench}")

    p = sub.add_parser("train", help="train a model on MNIST")
    p.add_argument("--model", choices=tuple(MODELS), default="simple-cnn")
    p.add_argument("--epochs", type=positive_int, default=5)
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: 0.001 for adam and rmsprop, "
                   "1.0 for adadelta, 0.01 otherwise)")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0, help="L2 weight decay")
    add_backend_args(p)
    add_data_args(p)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--limit", type=positive_int, metavar="N", help="train on the first N training images")
    p.add_argument("--validation", type=positive_int, metavar="N",
                   help="hold out the last N training images as a validation set")
    p.add_argument("--patience", type=positive_int, metavar="N",
                   help="early stopping: stop after N epochs without a better validation loss (needs --validation)")
    p.add_argument("--save", metavar="PATH", help="write the trained model here (.npz)")
    p.add_argument("--metrics", metavar="PATH", help="write per-epoch metrics here (JSON)")
    p.add_argument("--plot", metavar="PATH", help="write loss/accuracy curves here (PNG; needs fastnn[plot])")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("evaluate", help="test accuracy of a saved model")
    p.add_argument("model_file", metavar="MODEL.npz")
    add_backend_args(p)
    add_data_args(p)

    p = sub.add_parser("info", help="backends, threads and versions")

    p = sub.add_parser("bench", help="training throughput (images/s) of each available backend")
    p.add_argument("--model", choices=tuple(MODELS), default="simple-cnn")
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam")
    p.add_argument("--steps", type=positive_int, default=20, help="timed training steps per backend")
    p.add_argument("--backends", help="comma-separated (default: every available backend)")
    p.add_argument("--threads", type=positive_int)
    return top


def select_backend(args):
    from . import threads
    table = backends.use(args.backend) if args.backend else backends.get()
    return table, threads.set_threads(args.threads)


def write_json(path, data):
    from .checkpoint import atomic_write
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def cmd_train(args):
    from . import models, optim
    from .data import load_mnist
    from .train import Trainer
    if args.plot:
        from .plot import require_matplotlib
        require_matplotlib()  # fail now, not after training
    if args.patience and not args.validation:
        raise FastnnError("--patience needs a validation set: add --validation N (e.g. --validation 5000)")
    K, n_threads = select_backend(args)
    x_train, y_train, x_test, y_test = load_mnist(args.dataset, args.data, progress=not args.no_progress)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    validation = None
    if args.validation:
        if args.validation >= len(x_train):
            raise FastnnError(f"--validation {args.validation} leaves no training images (there are {len(x_train)})")
        validation = (x_train[-args.validation:], y_train[-args.validation:])
        x_train, y_train = x_train[:-args.validation], y_train[:-args.validation]
    model = models.build(args.model, seed=args.seed)
    optimizer = optim.make(args.optimizer, lr=args.lr, weight_decay=args.weight_decay)
    trainer = Trainer(model, optimizer, batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress)
    print(f"fastnn {args.model} on {args.dataset}: {len(x_train):,} training images, backend {K.NAME}, "
          f"{n_threads} threads, {args.optimizer} lr {optimizer.lr:g}, batch {args.batch_size}")
    print(f"compiling / warming up ... {trainer.warmup():.2f} s")
    metrics = {"model": args.model, "backend": K.NAME, "threads": n_threads, "batch_size": args.batch_size,
               "optimizer": args.optimizer, "lr": optimizer.lr, "compile_seconds": trainer.compile_seconds,
               "epochs": []}

    def report(trainer, m):
        line = (f"epoch {m['epoch']}/{args.epochs}  train loss {m['train_loss']:.4f}  "
                f"test loss {m['test_loss']:.4f}  test accuracy {100 * m['test_accuracy']:.2f}%  "
                f"{m['train_seconds']:.1f} s  {m['images_per_second']:,.0f} images/s")
        if "val_loss" in m:
            line += f"  (validation loss {m['val_loss']:.4f}, accuracy {100 * m['val_accuracy']:.2f}%)"
        print(line, flush=True)
        metrics["epochs"].append(m)
        if args.metrics:
            write_json(args.metrics, metrics)

    history = trainer.fit(x_train, y_train, epochs=args.epochs, test=(x_test, y_test), validation=validation,
                          patience=args.patience, on_epoch_end=report)
    if history[-1].get("early_stop"):
        print(f"early stop: no better validation loss for {args.patience} epochs; kept the best epoch's parameters")
    if args.save:
        model.save(args.save, metadata={"dataset": args.dataset, "metrics": metrics})
        print(f"saved the model to {args.save}")
    if args.plot:
        from .plot import plot_history
        plot_history(history, args.plot, title=f"{args.model} on {args.dataset} ({K.NAME} backend)")
        print(f"saved the curves to {args.plot}")
    return 0


def cmd_evaluate(args):
    from .checkpoint import load_model
    from .data import load_mnist
    select_backend(args)
    model, meta = load_model(args.model_file)
    model.to_backend()
    _, _, x_test, y_test = load_mnist(args.dataset or meta.get("dataset", "mnist"), args.data)
    loss, accuracy = model.evaluate(x_test, y_test)
    print(f"{args.model_file}: test accuracy {100 * accuracy:.2f}% ({accuracy:.4f}), test loss {loss:.4f} "
          f"on {len(x_test):,} images")
    return 0


def cmd_info(args):
    from . import threads
    import numba
    import threadpoolctl
    print(f"fastnn {__version__}, Python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}")
    print(f"active backend: {config.backend_name()} (FASTNN_BACKEND, default {config.DEFAULT_BACKEND})")
    print("backends:")
    for name, reason in backends.available().items():
        print(f"  {name:7s} {'available' if reason is None else 'unavailable: ' + reason}")
    print(f"threads: {threads.set_threads()} (FASTNN_NUM_THREADS, default all {config.num_threads()} cores)")
    for pool in threadpoolctl.threadpool_info():
        print(f"  {pool['user_api']}: {pool['internal_api']} {pool.get('version')} ({pool['num_threads']} threads)")
    print(f"data: {config.data_dir() or '(FASTNN_DATA unset)'}; cache {config.cache_dir()}")
    return 0


def cmd_bench(args):
    from .bench import run_bench
    names = args.backends.split(",") if args.backends else None
    run_bench(args.model, names, batch_size=args.batch_size, optimizer=args.optimizer, steps=args.steps,
              n_threads=args.threads)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "info": cmd_info, "bench": cmd_bench}


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FastnnError as e:
        print(f"fastnn {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
