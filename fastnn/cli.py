"""The command line: ``fastnn train | evaluate | predict | export | summary | info | bench``.

Errors fastnn knows about print one line and exit 1; bad arguments print usage and exit 2.
In a distributed run (``mpiexec -n N fastnn train --distributed``) an error that every rank meets
at the same point (a setting, a NaN loss) is printed once, by rank 0; one that a rank meets alone
is printed with its rank, and MPI_Abort then stops the other ranks, which would otherwise wait
for it at the next step.
"""
import argparse
import contextlib
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from . import __version__, backends, config, schedules
from .augment import RandomAffine
from .errors import BackendUnavailableError, ConfigError, FastnnError, TrainingDivergedError
from .models import MODELS
from .onnx_export import DEFAULT_OPSET, cmd_export
from .optim import OPTIMIZERS
from .predict import cmd_predict
from .recipes import RECIPE_BACKENDS, RECIPES
from .summary import cmd_summary

# The default run (simple-cnn, Adam, 5 epochs): a one-cycle schedule peaking at 3e-3 and label
# smoothing 0.1 took it from 98.43-98.51% (Adam 1e-3, constant) to 99.05-99.23% over 5 seeds; the
# one-cycle schedule alone reached 99.00-99.17%. README.md ("Time to 99%") has the figures.
DEFAULT_SCHEDULE = "onecycle"
DEFAULT_LABEL_SMOOTHING = 0.1
ONECYCLE_PEAK_LR = {"adam": 0.003}  # --lr's default under onecycle (its peak); else the optimizer's
DEFAULT_AUGMENT = [2.0, 10.0]  # pixels, degrees


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


def finite_number(allow_zero):
    """An argparse type: a finite float, > 0 (or >= 0 when ``allow_zero``)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(
                f"must be a number >= 0, got {text}" if allow_zero else f"must be a positive number, got {text}")
        return value
    return parse


positive_float, non_negative_float = finite_number(allow_zero=False), finite_number(allow_zero=True)


def decay_factor(text):
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def fraction_below_one(text):
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def accuracy(text):
    """A target accuracy: a fraction in (0, 1], or a percentage (99 or 99%)."""
    percent = text.endswith("%")
    value = positive_float(text.rstrip("%"))
    if percent or value > 1:
        value /= 100
    if value > 1:
        raise argparse.ArgumentTypeError(f"an accuracy is at most 1 (100%), got {text}")
    return value


def directory(text):
    """An existing directory (--data): one that is not there is a typo, not a reason to look elsewhere."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such directory: {text!r}")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a directory")
    return str(path)


def positive_int_list(text):
    """An argparse type: one or more comma-separated positive integers ("100" or "32,100,256")."""
    return tuple(positive_int(part) for part in text.split(","))


def number_list(n, kind, what):
    """An argparse type: ``n`` comma-separated numbers, each parsed by ``kind``."""
    def parse(text):
        parts = text.split(",")
        if len(parts) != n:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return [kind(part) for part in parts]
    return parse


def add_backend_args(p):
    p.add_argument("--backend", choices=config.BACKENDS, help="kernel backend (default: $FASTNN_BACKEND, else "
                   f"{config.DEFAULT_RULE}: {config.default_backend()} here)")
    p.add_argument("--threads", type=positive_int, help="threads for Numba, OpenMP and BLAS together "
                   "(default: $FASTNN_NUM_THREADS, else the cores this process may use)")


def add_data_args(p, default_dataset="mnist"):
    p.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default=default_dataset,
                   help=f"default: {default_dataset or 'the one the model was trained on'}")
    p.add_argument("--data", metavar="DIR", type=directory, help="directory holding the IDX files (default: "
                   "$FASTNN_DATA, then the user cache; downloaded there if absent)")


# What a run is made of: a checkpoint keeps these, and `train --resume` takes them from it.
RUN_SETTINGS = ("model", "dataset", "optimizer", "lr", "lr_decay", "weight_decay", "batch_size", "seed", "limit",
                "validation", "patience", "epochs", "schedule", "warmup", "cycle_momentum", "betas", "eps",
                "label_smoothing", "augment", "target_accuracy", "eval_every", "recipe")
UNSET = object()


def parser():
    """The argument parser. ``train`` leaves the RUN_SETTINGS that are not given as UNSET, and their
    defaults in ``run_defaults``: main() needs to know which the command line named."""
    top = argparse.ArgumentParser(prog="fastnn", description="Train readable MNIST CNNs on compiled kernels.")
    top.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = top.add_subparsers(dest="command", required=True,
                             metavar="{train,evaluate,predict,info,bench,summary,export}")

    p = sub.add_parser("train", help="train a model on MNIST")
    p.add_argument("--model", choices=tuple(MODELS), default="simple-cnn")
    p.add_argument("--epochs", type=positive_int, default=5)
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam")
    p.add_argument("--lr", type=positive_float, help="learning rate, onecycle's peak (default: 0.001 for adam "
                   "(0.003 under onecycle) and rmsprop, 1.0 for adadelta, 0.01 otherwise)")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0, help="L2 weight decay")
    p.add_argument("--recipe", choices=tuple(RECIPES), help="a named recipe: its settings become the defaults "
                   "(flags given still win); speedrun: 99%% test accuracy in the least time (README)")
    p.add_argument("--schedule", choices=tuple(schedules.SCHEDULES), default=DEFAULT_SCHEDULE,
                   help=f"learning-rate schedule, stepped every optimizer step, as PyTorch's: constant, step "
                        f"(StepLR, --lr-decay each epoch), cosine (CosineAnnealingLR over the run), onecycle "
                        f"(OneCycleLR: --lr is the peak) (default {DEFAULT_SCHEDULE})")
    p.add_argument("--warmup", type=non_negative_int, metavar="STEPS",
                   help="linear warm-up over this many steps (from a third of --lr); for onecycle, the length "
                        "of its rising phase (default: 30%% of the run for onecycle, else none)")
    p.add_argument("--lr-decay", type=decay_factor, metavar="GAMMA",
                   help="the step schedule: multiply the learning rate by GAMMA after every epoch (default "
                        "0.7, as PyTorch's MNIST example); given alone, it selects --schedule step")
    p.add_argument("--cycle-momentum", action="store_true",
                   help="onecycle: also cycle the momentum (adam's beta1) between 0.95 and 0.85")
    p.add_argument("--betas", type=number_list(2, fraction_below_one, "two numbers BETA1,BETA2"),
                   metavar="B1,B2", help="adam's betas (default 0.9,0.999)")
    p.add_argument("--eps", type=positive_float, help="the optimizer's eps (adam default 1e-8)")
    p.add_argument("--label-smoothing", type=fraction_below_one, default=DEFAULT_LABEL_SMOOTHING, metavar="S",
                   help="train on targets (1 - S) * onehot + S / classes (default %(default)s, 0 for none; the "
                        "train loss is the smoothed one, the test loss the plain one)")
    p.add_argument("--augment", nargs="?", const=DEFAULT_AUGMENT, metavar="SHIFT,DEGREES",
                   type=number_list(2, non_negative_float, "two numbers SHIFT,DEGREES"),
                   help="random translations of up to SHIFT pixels and rotations of up to DEGREES, drawn per "
                        f"image and step (default off; --augment alone: {','.join(map(str, DEFAULT_AUGMENT))})")
    p.add_argument("--target-accuracy", type=accuracy, metavar="A", help="stop as soon as the test accuracy "
                   "reaches A (0.99, or 99%%), evaluated after each epoch and every --eval-every steps")
    p.add_argument("--eval-every", type=positive_int, metavar="STEPS",
                   help="also evaluate the test set every STEPS optimizer steps (metrics: evaluations)")
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
    p.add_argument("--no-fusion", action="store_true", help="run every layer alone, one kernel each, instead of "
                   "fused Conv2D/Dense -> ReLU (-> MaxPool2D) kernels (the same as FASTNN_FUSION=0)")
    p.add_argument("--checkpoint", metavar="PATH", help="after every epoch (and every --checkpoint-every N "
                   "steps) write everything needed to resume exactly here (.npz, written atomically)")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                   help="also write the checkpoint every N training steps")
    p.add_argument("--resume", metavar="PATH", help="continue the run saved in this checkpoint with its settings "
                   "(--epochs may extend it); it goes on checkpointing there unless --checkpoint names another file")
    p.add_argument("--distributed", action="store_true", help="data-parallel training over MPI, each process one "
                   "rank: mpiexec -n N fastnn train --distributed ... (needs fastnn[mpi]). --batch-size is then the "
                   "global batch, split over the ranks; --threads defaults to the cores shared out among them")
    p.set_defaults(run_defaults={name: p.get_default(name) for name in RUN_SETTINGS},
                   **{name: UNSET for name in RUN_SETTINGS})

    p = sub.add_parser("evaluate", help="test accuracy of a saved model")
    p.add_argument("model_file", metavar="MODEL.npz")
    add_backend_args(p)
    add_data_args(p, default_dataset=None)

    p = sub.add_parser("predict", help="the digits in your own images (PNG, JPEG, BMP, GIF, .npy) by a saved model")
    p.add_argument("model_file", metavar="MODEL.npz")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, or directories of them")
    p.add_argument("--top", type=positive_int, default=1, metavar="K", help="print the K most probable labels")
    p.add_argument("--json", action="store_true", help="print a JSON list of {path, label, probabilities}")
    add_backend_args(p)

    p = sub.add_parser("summary", help="layers, output shapes, parameters and FLOPs of a saved or named model",
                       usage="%(prog)s [-h] (MODEL.npz | --model NAME)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("model_file", nargs="?", metavar="MODEL.npz", help="a saved model or checkpoint")
    which.add_argument("--model", choices=tuple(MODELS), help="a named model, freshly built")

    p = sub.add_parser("export", help="write a saved model as an ONNX file (needs fastnn[onnx])")
    p.add_argument("model_file", metavar="MODEL.npz", help="a saved model or checkpoint")
    p.add_argument("out_file", metavar="OUT.onnx")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help="ONNX opset, 17 or newer "
                   "(default %(default)s)")

    p = sub.add_parser("info", help="backends, threads and versions")

    p = sub.add_parser("warmup", help="compile (numba) a model's kernels ahead of time, for a CI job or a Docker "
                       "image", description="Compile every kernel a training step and an evaluation of the "
                       "model(s) use on the backend (numba keeps them in its on-disk cache; cython needs no "
                       "compile), and with FASTNN_TUNE=1 time their convolution algorithms (the tuning cache), as "
                       "a first `fastnn train` would: later runs start at once.")
    p.add_argument("--model", choices=("all", *MODELS), default="all", help="default: all")
    p.add_argument("--batch-size", type=positive_int, default=100, help="the training batch size to warm up for "
                   "(with FASTNN_TUNE=1, convolutions are tuned per shape; default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while numba compiles")
    add_backend_args(p)

    p = sub.add_parser("tune", help="time every convolution algorithm of a model's layers on this machine and "
                       "keep the fastest (used with FASTNN_TUNE=1)",
                       description="For each convolution of the model(s), time every algorithm that applies on "
                       "this machine (forward and both backward passes) and keep the fastest in the tuning cache "
                       "(config.cache_dir()/conv-tuning.json), keyed by CPU, threads, backend, shape and fastnn's "
                       "version. With FASTNN_TUNE=1 training uses these choices and times a new shape on its "
                       "first use; the default, FASTNN_TUNE=0, is the built-in table (the tuner times plain convolutions, "
                       "the nets run fused ones); FASTNN_CONV_ALGO forces one algorithm.")
    p.add_argument("--model", choices=("all", *MODELS), default="all", help="default: all")
    p.add_argument("--batch-size", type=positive_int_list, default=(100,), metavar="N[,N...]",
                   help="the batch sizes to tune for (the choice is kept per shape; default 100, train's default)")
    p.add_argument("--retune", action="store_true", help="time again shapes the cache already holds")
    add_backend_args(p)

    p = sub.add_parser("bench", help="training images/s of each backend and PyTorch, each in its own process",
                       description="Training throughput of each backend (and PyTorch when importable), each run "
                       "in a fresh process with the same threads; the median images/s of --repeats runs, the "
                       "ratios to PyTorch and numpy, compile seconds, and the machine's facts (fastnn/bench.py).")
    from .bench import add_arguments as add_bench_arguments
    add_bench_arguments(p)
    return top


def select_backend(args):
    from . import threads
    table = backends.use(args.backend) if args.backend else backends.get()
    return table, threads.set_threads(args.threads)


def write_json(path, data):
    from .checkpoint import atomic_write
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def check_output_paths(**paths):
    """Fail before training, not after it, on output files that cannot be written."""
    from .checkpoint import check_writable
    named = {flag: check_writable(path, f"--{flag.replace('_', '-')} {Path(path).resolve()}")
             for flag, path in paths.items() if path}
    if len(set(named.values())) < len(named):
        raise ConfigError(f"{', '.join('--' + f.replace('_', '-') for f in named)} must name different files")


def take_saved_settings(args, saved):
    """A resumed run keeps the settings its checkpoint was started with; a flag that says otherwise
    is an error (except --epochs, which may extend the run)."""
    given = getattr(args, "given", set())
    for name in RUN_SETTINGS:
        if name not in saved:
            continue
        flag = "--" + name.replace("_", "-")
        if name in given and name != "epochs" and getattr(args, name) != saved[name]:
            raise ConfigError(f"{flag} {getattr(args, name)} differs from the {saved[name]!r} that the run in "
                              f"{args.resume} was started with: a resumed run keeps its settings (drop {flag})")
        if name not in given:
            setattr(args, name, saved[name])
    for name in ("epochs", "limit", "validation", "patience"):
        value = getattr(args, name)
        if not (value is None and name != "epochs") and not (type(value) is int and value >= 1):
            raise ConfigError(f"{args.resume}: its setting {name} = {value!r} is not a whole number >= 1")


def make_schedule(args):
    """The schedule the flags describe (fastnn.schedules)."""
    params = {} if args.warmup is None else {"warmup": args.warmup}
    if args.schedule == "step":
        params["gamma"] = 0.7 if args.lr_decay is None else args.lr_decay
    elif args.lr_decay is not None:
        raise ConfigError(f"--lr-decay is the step schedule's factor, but the schedule is {args.schedule}: "
                          "drop --lr-decay, or use --schedule step")
    if args.cycle_momentum:
        if args.schedule != "onecycle":
            raise ConfigError("--cycle-momentum cycles against onecycle's rate: add --schedule onecycle")
        params["cycle_momentum"] = True
    return schedules.make(args.schedule, **params)


def make_optimizer(args):
    from . import optim
    hyper = {"betas": args.betas} if args.betas is not None else {}
    if args.eps is not None:
        hyper["eps"] = args.eps
    lr = args.lr if args.lr is not None or args.schedule != "onecycle" else ONECYCLE_PEAK_LR.get(args.optimizer)
    return optim.make(args.optimizer, lr=lr, weight_decay=args.weight_decay, **hyper)


def run_summary(trainer) -> dict:
    """What the metrics JSON says about the whole run (fastnn.Trainer's clock and evaluations, and
    a distributed run's Allreduce)."""
    summary = {"seconds_to_target": trainer.seconds_to_target,
               "train_seconds_total": sum(m["train_seconds"] for m in trainer.history),
               "run_seconds": trainer.clock(), "evaluations": trainer.evaluations}
    if trainer.parallel is not None:
        summary.update(trainer.parallel.summary())
    return summary


def cmd_train(args):
    """``train``; with --distributed, as one rank of an MPI run (rank 0 alone prints and writes files)."""
    args.parallel = None
    if args.distributed:
        from .distributed import DataParallel
        args.parallel = DataParallel.launched()
        if not args.parallel.is_root:
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                return run_training(args)
    return run_training(args)


def run_training(args):
    from . import models
    from .data import load_mnist
    from .train import Trainer
    if args.plot:
        from .plot import require_matplotlib
        require_matplotlib()  # fail now, not after training
    checkpoint_path = args.checkpoint or args.resume
    if args.checkpoint_every and not checkpoint_path:
        raise ConfigError("--checkpoint-every needs a file to write to: add --checkpoint PATH")
    check_output_paths(save=args.save, metrics=args.metrics, plot=args.plot,  # named as the command line names it
                       **{"checkpoint" if args.checkpoint else "resume": checkpoint_path})
    if args.resume:  # an exact resume needs the backend and threads the run began with
        from .checkpoint import CHECKPOINT_FORMAT, load_arrays
        saved = load_arrays(args.resume, CHECKPOINT_FORMAT)[0].get("settings") or {}
        if not args.backend and saved.get("backend") in config.BACKENDS:
            args.backend = saved["backend"]
        if not args.threads and type(saved.get("threads")) is int and saved["threads"] >= 1:
            args.threads = saved["threads"]
    recipe_backend = RECIPE_BACKENDS.get(args.recipe)
    if recipe_backend and not args.backend and not os.environ.get("FASTNN_BACKEND", "").strip():
        try:  # the backend the recipe was timed on, where it loads; else the usual one
            backends.load(recipe_backend)
            args.backend = recipe_backend
        except (BackendUnavailableError, ImportError) as e:
            print(f"note: recipe {args.recipe} runs fastest on the {recipe_backend} backend, which is unavailable "
                  f"here ({e}); using {config.backend_name()}")
    parallel = args.parallel
    if parallel is not None and not args.threads:
        args.threads = parallel.local_threads()
    K, n_threads = select_backend(args)
    trainer = None
    if args.resume:  # read it before the data: a bad checkpoint fails at once
        trainer = Trainer.from_checkpoint(args.resume, progress=not args.no_progress, checkpoint_path=checkpoint_path,
                                          checkpoint_every=args.checkpoint_every, parallel=parallel)
        take_saved_settings(args, trainer.settings)
        trainer.settings["epochs"] = args.epochs  # an extended run is resumed to its new end
    if args.patience and not args.validation:
        raise FastnnError("--patience needs a validation set: add --validation N (e.g. --validation 5000)")
    x_train, y_train, x_test, y_test = load_mnist(args.dataset, args.data, progress=not args.no_progress)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    validation = None
    if args.validation:
        if args.validation >= len(x_train):
            raise FastnnError(f"--validation {args.validation} leaves no training images (there are {len(x_train)})")
        validation = (x_train[-args.validation:], y_train[-args.validation:])
        x_train, y_train = x_train[:-args.validation], y_train[:-args.validation]
    if trainer is None:
        model = models.build(args.model, seed=args.seed)
        augment = None if args.augment is None else RandomAffine(shift=args.augment[0], degrees=args.augment[1])
        settings = {name: getattr(args, name) for name in RUN_SETTINGS}
        settings.update(backend=K.NAME, threads=n_threads)  # for the record: exact resumes need the same
        trainer = Trainer(model, make_optimizer(args), batch_size=args.batch_size, seed=args.seed,
                          progress=not args.no_progress, checkpoint_path=checkpoint_path,
                          checkpoint_every=args.checkpoint_every, settings=settings, schedule=make_schedule(args),
                          label_smoothing=args.label_smoothing, augment=augment, parallel=parallel)
    model, optimizer = trainer.model, trainer.optimizer
    world_size = 1 if parallel is None else parallel.size
    writes = parallel is None or parallel.is_root  # rank 0 alone writes --save, --metrics and --plot
    if args.no_fusion:
        model.set_fusion(False)
    recipe = f"recipe {args.recipe}: " if args.recipe else ""
    print(f"fastnn {recipe}{args.model} on {args.dataset}: {len(x_train):,} training images, backend {K.NAME}, "
          f"{n_threads} threads, {args.optimizer} lr {optimizer.base_lr:g} ({trainer.schedule.name} schedule), "
          f"batch {args.batch_size}, fusion {'on' if model.fuse else 'off'}"
          + (f", label smoothing {trainer.label_smoothing:g}" if trainer.label_smoothing else "")
          + (f", augment {trainer.augment!r}" if trainer.augment is not None else "")
          + (f", {world_size} ranks ({n_threads} threads each; a global batch of {args.batch_size} is "
             f"{args.batch_size // world_size} images per rank)" if parallel is not None else ""))
    if args.resume:
        print(f"resuming {args.resume}: {trainer.epoch} epochs and {trainer.step} steps of the next done")
        was = (trainer.settings.get("backend"), trainer.settings.get("threads"))
        if was != (K.NAME, n_threads):
            print(f"note: the run began on backend {was[0]} with {was[1]} threads; on {K.NAME} with {n_threads} "
                  f"the result matches an uninterrupted run to rounding, not bit for bit")
    from .backends import tuning
    from .warmup import compile_progress
    tuned_before = tuning.spent().seconds
    with compile_progress(show=not args.no_progress and writes):
        warmup_seconds = trainer.warmup()
    tuning_seconds = tuning.spent().seconds - tuned_before  # first use of a shape on this machine: once
    print(f"compiling / warming up ... {warmup_seconds:.2f} s"
          + (f" (of which {tuning_seconds:.2f} s timing the convolution algorithms for this machine, kept for "
             f"next time: fastnn tune)" if tuning_seconds else ""))
    metrics = {"model": args.model, "backend": K.NAME, "threads": n_threads, "batch_size": args.batch_size,
               "recipe": args.recipe, "optimizer": args.optimizer, "lr": optimizer.base_lr,
               "optimizer_settings": optimizer.config(),
               "schedule": trainer.schedule.config(), "label_smoothing": trainer.label_smoothing,
               "augment": trainer.augment_config,
               "target_accuracy": args.target_accuracy, "compile_seconds": trainer.compile_seconds,
               "tuning_seconds": tuning_seconds,
               "world_size": world_size, "epochs": list(trainer.history), **run_summary(trainer)}

    def report(trainer, m):
        line = (f"epoch {m['epoch']}/{args.epochs}  train loss {m['train_loss']:.4f}  "
                f"test loss {m['test_loss']:.4f}  test accuracy {100 * m['test_accuracy']:.2f}%  "
                f"{m['train_seconds']:.1f} s  {m['images_per_second']:,.0f} images/s")
        if "val_loss" in m:
            line += f"  (validation loss {m['val_loss']:.4f}, accuracy {100 * m['val_accuracy']:.2f}%)"
        print(line, flush=True)
        if m.get("target_reached"):
            where = trainer.evaluations[-1] if trainer.evaluations and trainer.evaluations[-1]["step"] == \
                trainer.optimizer.steps else {"step": trainer.optimizer.steps, "epoch": trainer.epoch}
            print(f"reached the target {100 * args.target_accuracy:g}% at step {where['step']} (epoch "
                  f"{where['epoch']:.2f}) in {trainer.seconds_to_target:.2f} s of training and evaluating")
        metrics["epochs"].append(m)
        metrics.update(run_summary(trainer))
        if args.metrics and writes:
            write_json(args.metrics, metrics)

    history = trainer.history
    finished = history and (history[-1].get("early_stop") or history[-1].get("target_reached"))
    remaining = 0 if finished else args.epochs - trainer.epoch
    if remaining > 0:
        history = trainer.fit(x_train, y_train, epochs=remaining, test=(x_test, y_test), validation=validation,
                              patience=args.patience, on_epoch_end=report, eval_every=args.eval_every,
                              target_accuracy=args.target_accuracy)
        if args.target_accuracy is not None and trainer.seconds_to_target is None:
            best = max([e["test_accuracy"] for e in trainer.evaluations] + [m["test_accuracy"] for m in history])
            print(f"the target {100 * args.target_accuracy:g}% was not reached (best test accuracy "
                  f"{100 * best:.2f}%)")
    else:
        print(f"nothing left to train: the run in {args.resume} finished its {trainer.epoch} epochs")
    if history and history[-1].get("early_stop"):
        print(f"early stop: no better validation loss for {args.patience} epochs; kept the best epoch's parameters")
    if not writes:
        return 0
    if args.save:
        from .checkpoint import save_model
        save_model(args.save, model, metadata={"dataset": args.dataset, "metrics": metrics})
        print(f"saved the model to {args.save}")
    if args.plot:
        from .plot import plot_history
        plot_history(history, args.plot, title=f"{args.model} on {args.dataset} ({K.NAME} backend)")
        print(f"saved the curves to {args.plot}")
    return 0


def trained_on(metadata) -> str:
    """The data set a model file (``--save``: "dataset") or a checkpoint (its run "settings") was trained on."""
    return metadata.get("dataset") or (metadata.get("settings") or {}).get("dataset") or "mnist"


def check_model_fits(model, model_file, image_shape, what, classes=None):
    """Refuse, naming the file and both shapes, a model that cannot take ``what``'s images of
    ``image_shape`` (or, given ``classes``, has fewer outputs than their labels): a clearer line than
    the first layer's ShapeError, which knows nothing of the file."""
    if model.input_shape != tuple(image_shape):
        raise ConfigError(f"{model_file}: its model takes {model.input_shape} images, but {what} gives it "
                          f"{tuple(image_shape)}; give a model trained on these images")
    if classes is not None and model.output_shape[0] < classes:
        raise ConfigError(f"{model_file}: its model outputs {model.output_shape[0]} class scores, but {what} "
                          f"has labels 0-{classes - 1}; give a model trained on this data set")


def cmd_evaluate(args):
    from .checkpoint import load_model
    from .data import load_mnist
    select_backend(args)
    model, meta = load_model(args.model_file)
    model.to_backend()
    dataset = args.dataset or trained_on(meta)
    _, _, x_test, y_test = load_mnist(dataset, args.data)
    check_model_fits(model, args.model_file, x_test.shape[1:], f"{dataset}'s test set", int(y_test.max()) + 1)
    loss, accuracy = model.evaluate(x_test, y_test)
    print(f"{args.model_file}: test accuracy {100 * accuracy:.2f}% ({accuracy:.4f}), test loss {loss:.4f} "
          f"on {len(x_test):,} images")
    return 0


def cmd_info(args):
    from . import threads
    import numba
    import threadpoolctl
    print(f"fastnn {__version__}, Python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}")
    print(f"active backend: {config.backend_name()} (FASTNN_BACKEND, default {config.DEFAULT_RULE}: "
          f"{config.default_backend()} here)")
    print("backends:")
    for name, reason in backends.available().items():
        built = ("" if name != "cython" or reason is not None else
                 " (fastnn_ext built with OpenMP)" if backends.load(name).OPENMP else
                 " (fastnn_ext built without OpenMP: one thread; a compiler with OpenMP builds a faster one)")
        print(f"  {name:7s} {'available' if reason is None else 'unavailable: ' + reason}{built}")
    print(f"threads: {threads.set_threads()} (FASTNN_NUM_THREADS, default the {config.usable_cpus()} usable cores: "
          f"affinity mask and cgroup quota; the machine has {os.cpu_count()})")
    for pool in threadpoolctl.threadpool_info():
        print(f"  {pool['user_api']}: {pool['internal_api']} {pool.get('version')} ({pool['num_threads']} threads)")
    print(f"fusion: {'on' if config.fusion() else 'off'} (FASTNN_FUSION, default on)")
    from .distributed import mpi_status
    print(f"distributed (MPI): {mpi_status()}")
    print(f"data: {config.data_dir() or '(FASTNN_DATA unset)'}; cache {config.cache_dir()}")
    from .backends import tuning
    print(f"convolution algorithms: {'tuned per machine' if config.tune() else 'the built-in table'} (FASTNN_TUNE, "
          f"default 0), forced: {config.conv_algorithm()} (FASTNN_CONV_ALGO); tuning cache {tuning.cache_file()}: "
          f"{tuning.describe_cache()}")
    return 0


def cmd_warmup(args):
    from .warmup import warm_up
    K, n_threads = select_backend(args)
    names = tuple(MODELS) if args.model == "all" else (args.model,)
    print(f"warming up {', '.join(names)} on backend {K.NAME}, {n_threads} threads, batch {args.batch_size}")
    for r in warm_up(names, args.batch_size, progress=not args.no_progress):
        print(f"  {r['model']:12s} {r['seconds']:6.1f} s: {r['kernels_compiled']} kernel(s) compiled, "
              f"{r['shapes_tuned']} convolution shape(s) tuned in {r['tuning_seconds']:.1f} s")
    return 0


def cmd_tune(args):
    from .backends import tuning
    K, n_threads = select_backend(args)
    names = tuple(MODELS) if args.model == "all" else (args.model,)
    if getattr(K, "conv2d_choice", None) is None:
        print(f"backend {K.NAME} has one convolution algorithm: nothing to tune")
        return 0
    print(f"tuning the convolutions of {', '.join(names)} on backend {K.NAME}, {n_threads} threads; cache "
          f"{tuning.cache_file()}")
    from .models import build
    start = tuning.spent()
    for name in names:
        model = build(name)
        for batch_size in args.batch_size:
            for r in tuning.tune_model(model, K.NAME, batch_size, retune=args.retune):
                (_, C, H, W), (F, _, KH, KW) = r["x_shape"], r["w_shape"]
                shape = f"{C}->{F} {KH}x{KW} s{r['stride']} p{r['pad']} at {H}x{W}"
                times = ("  " + ", ".join(f"{a} {ms:.2f}" for a, ms in sorted(r["ms"].items(), key=lambda t: t[1]))
                         + " ms") if r["ms"] else ""
                how = ("timed now" if r["timed"] else "cached") if r["source"] == "tuned" else "the only one"
                print(f"  {name:12s} batch {batch_size:<4d} layer {r['layer']} {shape:24s} "
                      f"{r['algorithm']:9s} ({how}){times}")
    spent = tuning.spent()
    print(f"tuned {spent.shapes - start.shapes} shape(s) in {spent.seconds - start.seconds:.1f} s (of which "
          f"{spent.warmup_seconds - start.warmup_seconds:.1f} s compiling or loading kernels, untimed)")
    return 0


def cmd_bench(args):
    from .bench import failures, run_from_args
    failed = failures(run_from_args(args))
    if failed:
        print(f"fastnn bench: error: {len(failed)} measurement(s) failed: {'; '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "info": cmd_info, "bench": cmd_bench, "tune": cmd_tune,
            "warmup": cmd_warmup,
            "summary": cmd_summary, "export": cmd_export, "predict": cmd_predict}


def main(argv=None):
    args = parser().parse_args(argv)
    if args.command == "train":  # which run settings the command line names (a resumed run keeps the rest)
        args.given = {name for name in RUN_SETTINGS if getattr(args, name) is not UNSET}
        if "lr_decay" in args.given and "schedule" not in args.given:  # --lr-decay alone: per-epoch decay
            args.schedule, args.given = "step", args.given | {"schedule"}
        if "recipe" in args.given:  # its settings are the defaults
            args.run_defaults = {**args.run_defaults, **RECIPES[args.recipe]}
        for name, default in args.run_defaults.items():
            if name not in args.given:
                setattr(args, name, default)
    try:
        return COMMANDS[args.command](args)
    except (FastnnError, OSError) as e:  # OSError: a full disk, a file that vanished, no permission
        parallel = getattr(args, "parallel", None)
        if parallel is not None and parallel.size > 1:
            return distributed_error(args, parallel, e)
        print(f"fastnn {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        checkpoint = getattr(args, "checkpoint", None) or getattr(args, "resume", None)
        if checkpoint and Path(checkpoint).is_file():
            print(f"the last checkpoint is {checkpoint}: continue with  fastnn train --resume {checkpoint}",
                  file=sys.stderr)
        return 130
    except BaseException:  # a bug, on one rank of a distributed run: the others must not wait for it
        parallel = getattr(args, "parallel", None)
        if parallel is None or parallel.size == 1:
            raise
        import traceback
        print(f"fastnn {args.command}: rank {parallel.rank} of {parallel.size} failed:", file=sys.stderr)
        traceback.print_exc()
        parallel.abort(1)


def distributed_error(args, parallel, error):
    """An error in a distributed run: see the module's docstring."""
    if isinstance(error, (ConfigError, TrainingDivergedError)):  # every rank meets these at the same step
        if parallel.is_root:
            print(f"fastnn {args.command}: error: {error}", file=sys.stderr)
        return 1
    print(f"fastnn {args.command}: error on rank {parallel.rank} of {parallel.size}: {error}; stopping all ranks",
          file=sys.stderr, flush=True)
    parallel.abort(1)


if __name__ == "__main__":
    sys.exit(main())
