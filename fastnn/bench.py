"""Training throughput (images/s) of fastnn's backends, next to PyTorch on the same architecture:
the one measuring routine behind ``fastnn bench`` and ``benchmarks/train_throughput.py``.

Why every measurement runs in a fresh process: in one process the backends' thread pools
interfere. OpenBLAS's threads, once woken by the numpy backend, keep spinning next to Numba's
and OpenMP's; each compiled backend limits BLAS to one thread and the next one inherits that;
Numba's pool cannot be resized past its start. Measured that way, `fastnn bench` once ranked
cython 1.9x numba on simple-cnn while numba alone trained 1.7-2x faster than it was credited.
So each backend (and PyTorch, when it is importable) runs in its own interpreter, started with
the same threads everywhere (FASTNN_NUM_THREADS, NUMBA_NUM_THREADS, OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS, MKL_NUM_THREADS; torch.set_num_threads), and reports its process id so
tests can check that it did.

In each worker: build the model, warm up (one step: Numba compiles or loads its cache; timed
apart and reported as compile seconds), then time training steps on real MNIST batches (--data,
else FASTNN_DATA and the user cache; random images if there are none: throughput does not depend
on the pixels) until ``images`` images have been seen. ``repeats`` runs per backend go in the
order A B C A B C ..., so a slow spell of a shared machine hits every backend; the report gives
the median images/s with its min-max spread, and ratios of medians to PyTorch eager, to the fastest
PyTorch mode measured, and to numpy. ``fresh_cache`` first runs each backend with a compile cache
(Numba's; torch.compile's inductor cache) once with that cache empty, to show the compile seconds
of a first run next to those of a cached one.

``profile_steps`` adds, in each fastnn backend's first run, that many steps after the timed ones
with every step of the model's plan (a fused block, or a layer alone) timed apart: milliseconds,
FLOPs, GFLOP/s, the share of the sgemm rate measured in the same process, and each Conv2D's
algorithm and where the choice came from (tuned on this machine, the built-in table, forced by
FASTNN_CONV_ALGO, or the only one that applies; fastnn/backends/tuning.py).

PyTorch is a point of comparison, never a dependency: it is imported only inside the worker that
measures it. Its model is read off fastnn's layer by layer (``torch_twin``); same optimizer,
learning rate and batch size, CrossEntropyLoss, its own default initialisation. ``torch_modes``
asks for PyTorch as its users may run it at its best, each mode an entry and a worker of its own:
"torch" (eager), "torch-channels_last" (weights and each batch in NHWC) and "torch-compile"
(torch.compile(model); its first TORCH_COMPILE_WARMUP_STEPS steps are its compile seconds, and a
compilation that fails here makes the entry a skip with the reason, never a failed bench).

The report (``--json``): {machine: fastnn.machine.machine_facts(), images, threads, repeats,
parent_pid, options, models: {model: {batch_size, optimizer, lr, best_torch (the fastest PyTorch
entry, or null), results: {backend: {images_per_second (median), images_per_second_min,
images_per_second_max, compile_seconds (median), compile_seconds_first_run, ratio_to_torch,
ratio_to_best_torch, ratio_to_numpy, data, threadpools, runs: [{pid, images, seconds,
images_per_second, compile_seconds, tuning_seconds (FASTNN_TUNE=1: timing the convolutions on
first use, apart), threads, ...}], failed_runs, profile; PyTorch's entries also torch (its
version), torch_mode, warmup_steps} or {skipped: reason} or {error, runs}}}}}.
"""
import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from textwrap import shorten

import numpy as np

# model: (batch size, optimizer) by default, as in the examples the models come from
MODEL_DEFAULTS = {
    "simple-cnn": (100, "adam"),
    "pytorch-net": (64, "adadelta"),
    "deep-cnn": (100, "adam"),
    "mlp": (100, "adam"),
    "speedrun-net": (256, "adam"),
}
# optimizers that PyTorch has too, and the learning rate each gets when none is given
DEFAULT_LR = {"adam": 1e-3, "adadelta": 1.0, "sgd": 0.01}
DEFAULT_IMAGES = 6000
DEFAULT_REPEATS = 3
TORCH = "torch"  # the name PyTorch's measurement goes by, next to the backends' names
TORCH_CUDA = "torch-cuda"  # PyTorch on the GPU, beside the cuda backend (a CUDA build of torch and a GPU)
# --torch-modes: how a PyTorch user may run the same model on the CPU, each measured as an entry of its
# own; eager keeps the name "torch" that reports have always used
TORCH_MODES = {"eager": TORCH, "channels_last": "torch-channels_last", "compile": "torch-compile"}
TORCH_MODE_OF = {name: mode for mode, name in TORCH_MODES.items()} | {TORCH_CUDA: "eager"}
DEFAULT_TORCH_MODES = ("eager",)
# torch.compile traces and compiles forward and backward in the first step; a second step keeps any
# recompilation its guards ask for (a new grad state, a new shape) out of the clock too
TORCH_COMPILE_WARMUP_STEPS = 2
# the on-disk compile cache of each contestant that has one: --fresh-cache empties it for a first run
FRESH_CACHE_ENV = {"numba": "NUMBA_CACHE_DIR", "cuda": "NUMBA_CACHE_DIR",
                   TORCH_MODES["compile"]: "TORCHINDUCTOR_CACHE_DIR"}
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # workers import this same fastnn
RESULT_PREFIX = "RESULT "


@dataclass
class Options:
    """What every worker of one benchmark shares. batch_size, optimizer and lr of None take each
    model's defaults (MODEL_DEFAULTS, DEFAULT_LR)."""
    images: int = DEFAULT_IMAGES
    threads: int | None = None  # None: FASTNN_NUM_THREADS, else the usable cores
    repeats: int = DEFAULT_REPEATS
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    fresh_cache: bool = False
    profile_steps: int = 0  # 0: no per-layer profile
    data: str | None = None  # the MNIST directory; None: FASTNN_DATA, then the user cache
    torch_modes: tuple = DEFAULT_TORCH_MODES  # keys of TORCH_MODES, measured when PyTorch is compared


def model_settings(model, options):
    """(batch size, optimizer, learning rate) of one model: the options, else its defaults."""
    batch_size, optimizer = MODEL_DEFAULTS[model]
    optimizer = options.optimizer or optimizer
    lr = options.lr if options.lr is not None else DEFAULT_LR.get(optimizer)  # None: fastnn's default
    return options.batch_size or batch_size, optimizer, lr


# ======================================================================== in the worker process

def load_batches(n_images, batch_size, data=None, seed=0):
    """(x, y, source) host arrays of at least one batch: MNIST training images when found, else random."""
    n = max(n_images, batch_size)
    try:
        from .data import load_mnist
        x, y, _, _ = load_mnist("mnist", data, download_missing=False, progress=False)
        reps = -(-n // len(x))
        return np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n], "mnist"
    except Exception:  # noqa: BLE001  no data here: throughput does not depend on the pixels
        rng = np.random.default_rng(seed)
        return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n), "random"


def make_batches(x, y, batch_size, prepare):
    """Consecutive full batches, each put where the step wants it by ``prepare(xb, yb)``."""
    return [prepare(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x) - batch_size + 1, batch_size)]


def time_steps(step, n_images, batch_size, batches, finish=None):
    """Run ``step`` on the batches in turn until n_images images are seen; (images, seconds).
    ``finish(last step's result)``, inside the clock, waits for work still queued (a GPU's) and
    returns the last loss; without it each step returns its loss, read back, so it has finished."""
    steps = max(1, n_images // batch_size)
    start = time.perf_counter()
    for i in range(steps):
        loss = step(*batches[i % len(batches)])
    if finish is not None:
        loss = finish(loss)
    seconds = time.perf_counter() - start
    if not np.isfinite(loss):
        raise RuntimeError(f"the loss became {loss}")
    return steps * batch_size, seconds


def measure_fastnn(spec):
    """One fastnn backend on one model: compile seconds, then images and seconds of the timed steps."""
    from . import backends, models, optim, threads
    from .train import Trainer

    K = backends.use(spec["backend"])  # BackendUnavailableError: the worker reports it as skipped
    if getattr(K, "SIMULATOR", False):
        raise Unmeasurable("the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) runs every GPU thread in Python: "
                           "its timings say nothing")
    n_threads = threads.set_threads(spec["threads"])  # after loading: limits the BLAS/OpenMP it brought in
    trainer = Trainer(models.build(spec["model"], seed=0), optim.make(spec["optimizer"], lr=spec["lr"]),
                      batch_size=spec["batch_size"], seed=0, progress=False)
    from .backends import tuning
    tuned_before = tuning.spent().seconds
    warmup_seconds = trainer.warmup()
    tuning_seconds = tuning.spent().seconds - tuned_before  # a shape's first use on this machine: apart
    x, y, source = load_batches(spec["images"], spec["batch_size"], spec["data"])
    batches = make_batches(x, y, spec["batch_size"], lambda xb, yb: (K.to_device(xb), K.to_device(yb)))
    step, finish = trainer.train_step, None
    if trainer.loss_log is not None:  # cuda: a training run's steps, whose losses wait on the device
        def step(xb, yb):
            trainer.logged_step(xb, yb)
            return trainer.read_losses() if trainer.loss_log.full() else None

        def finish(last):
            last = trainer.read_losses(last)
            K.synchronize()
            return last
    images, seconds = time_steps(step, spec["images"], spec["batch_size"], batches, finish)
    result = {"compile_seconds": warmup_seconds - tuning_seconds, "tuning_seconds": tuning_seconds,
              "images": images, "seconds": seconds, "data": source,
              "threads": n_threads}
    if spec["profile_steps"]:  # after the timed steps, so that asking for a profile leaves images/s as it was
        result["profile"] = profile_layers(trainer, K, batches, spec["profile_steps"], n_threads)
    return result


def torch_twin(model):
    """The same architecture in PyTorch, read off a fastnn Sequential layer by layer, so the two
    cannot drift apart. PyTorch's default initialisation (the weights are not copied)."""
    from torch import nn

    from . import layers as L

    def twin(layer):
        if isinstance(layer, L.Conv2D):
            return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.pad)
        if isinstance(layer, L.Dense):
            return nn.Linear(layer.in_features, layer.out_features)
        if isinstance(layer, L.MaxPool2D):
            return nn.MaxPool2d(layer.size, layer.stride, layer.pad)
        if isinstance(layer, L.AvgPool2D):
            return nn.AvgPool2d(layer.size, layer.stride, layer.pad)  # zero padding counts in both
        if isinstance(layer, L.Dropout):
            return nn.Dropout(layer.p)
        same = {L.ReLU: nn.ReLU, L.Sigmoid: nn.Sigmoid, L.Tanh: nn.Tanh, L.Flatten: nn.Flatten}
        if type(layer) in same:
            return same[type(layer)]()
        raise Unmeasurable(f"{model.name}: no PyTorch twin of layer {layer!r}")
    return nn.Sequential(*(twin(layer) for layer in model.layers))


def is_torch(name):
    return name in TORCH_MODE_OF


def one_line(error, width=200):
    """An exception as one short line: torch.compile's errors run to pages."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return shorten(f"{type(error).__name__}: {first}" if first else type(error).__name__, width, placeholder=" ...")


def measure_torch(spec):
    """PyTorch on the twin of one model, measured as measure_fastnn measures a backend, in the mode
    the entry's name says (TORCH_MODE_OF): eager; channels_last, the model's weights and each batch
    (inside the clock, as a user's loop would) in NHWC; or torch.compile(model), whose warm-up steps
    are its compile seconds. On the GPU (TORCH_CUDA, eager) with the batches uploaded once and no loss
    read back until the end. A torch.compile that fails here is a skip with its reason."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        raise Unmeasurable(f"torch is not importable ({e})") from e
    from . import models

    optimizers = {"adam": torch.optim.Adam, "adadelta": torch.optim.Adadelta, "sgd": torch.optim.SGD}
    if spec["optimizer"] not in optimizers:
        raise Unmeasurable(f"no PyTorch twin of optimizer {spec['optimizer']!r} here "
                           f"(one of {', '.join(optimizers)} compares)")
    device = "cuda" if spec["backend"] == TORCH_CUDA else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise Unmeasurable(f"torch {torch.__version__} has no CUDA device here (a CPU build, or no GPU)")
    mode = TORCH_MODE_OF[spec["backend"]]
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = torch_twin(models.build(spec["model"])).to(device)
    channels_last = mode == "channels_last"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # conv weights NHWC; dense ones have no such layout
    opt = optimizers[spec["optimizer"]](model.parameters(), lr=spec["lr"])
    model.train()
    forward = model
    if mode == "compile":
        try:
            forward = torch.compile(model)  # shares model's parameters: opt updates what it runs
        except Exception as e:  # noqa: BLE001  e.g. a Python that Dynamo does not support yet
            raise Unmeasurable(f"torch.compile failed here: {one_line(e)}") from e

    def step(xb, yb):
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(xb), yb)
        loss.backward()
        opt.step()
        return loss.item() if device == "cpu" else loss

    def finish(last):  # the GPU's queued steps, inside the clock
        torch.cuda.synchronize()
        return last.item()

    x, y, source = load_batches(spec["images"], spec["batch_size"], spec["data"])
    batches = make_batches(x, y, spec["batch_size"], lambda xb, yb: (
        torch.from_numpy(np.ascontiguousarray(xb)).to(device), torch.from_numpy(yb).to(device)))
    # warm-up, timed apart: allocations, oneDNN's or cuDNN's kernel choices; torch.compile's compilation
    warmup_steps = TORCH_COMPILE_WARMUP_STEPS if mode == "compile" else 1
    start = time.perf_counter()
    try:
        for i in range(warmup_steps):
            last = step(*batches[i % len(batches)])
    except Exception as e:  # noqa: BLE001  inductor wants a C++ compiler, and more, that a machine may lack
        if mode != "compile":
            raise
        raise Unmeasurable(f"torch.compile failed here: {one_line(e)}") from e
    if device == "cuda":
        finish(last)
    compile_seconds = time.perf_counter() - start
    images, seconds = time_steps(step, spec["images"], spec["batch_size"], batches,
                                 finish if device == "cuda" else None)
    return {"compile_seconds": compile_seconds, "warmup_steps": warmup_steps, "images": images, "seconds": seconds,
            "data": source, "threads": torch.get_num_threads(), "torch": torch.__version__, "torch_mode": mode}


class Unmeasurable(Exception):
    """This worker cannot measure here (no torch, a simulated GPU, no twin): a skip, not a failure."""


def worker_main(spec_json):
    """The worker process: measure what the spec names, print one RESULT line of JSON.
    A backend that cannot run here is reported as {"skipped": reason}; other errors fail the process."""
    from .errors import BackendUnavailableError
    from .machine import blas_libraries

    spec = json.loads(spec_json)
    try:
        result = measure_torch(spec) if is_torch(spec["backend"]) else measure_fastnn(spec)
    except (BackendUnavailableError, Unmeasurable) as e:
        result = {"skipped": str(e)}
    else:
        result["threadpools"] = blas_libraries()  # as this process ran: BLAS on 1 thread under numba/cython
    result["pid"] = os.getpid()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---- the per-layer profile (profile_steps)

def sgemm_gflops(n_threads, size=1024, tries=5):
    """GFLOP/s of a size^3 float32 matmul through scipy's BLAS (the one the compiled backends call),
    best of ``tries`` after a warm-up: the roof that the layers' rates are measured against.
    BLAS is limited to n_threads here explicitly: a backend may have set it to one thread
    (it splits the work over its own threads and calls BLAS inside them)."""
    from scipy.linalg.blas import sgemm
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = (np.asfortranarray(rng.random((size, size), dtype=np.float32)) for _ in range(2))  # no copy inside
    with threadpool_limits(limits=n_threads):
        sgemm(1.0, a, b)
        best = np.inf
        for _ in range(tries):
            start = time.perf_counter()
            sgemm(1.0, a, b)
            best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def layer_flops(layer, x_shape, y_shape):
    """(forward, backward) floating-point operations of one layer on one batch, a multiply-add
    counting 2. Only Conv2D and Dense are counted: the other layers are memory traffic."""
    from .layers import Conv2D, Dense

    if isinstance(layer, Conv2D):
        n, c = x_shape[:2]
        f, oh, ow = y_shape[1:]
        one = 2 * n * f * c * layer.kernel_size ** 2 * oh * ow
        return one, one * (2 if layer.need_dx else 1)  # backward-weights, and backward-data unless skipped
    if isinstance(layer, Dense):
        one = 2 * x_shape[0] * layer.in_features * layer.out_features
        return one, one * (2 if layer.need_dx else 1)  # dW, and dx unless skipped
    return 0, 0


def describe_layer(layer):
    """A short name for a profile row: "Conv2D 16->32 3x3 pad 1", "Dense 1024->50", "MaxPool2D 2"."""
    from .layers import AvgPool2D, Conv2D, Dense, Dropout, MaxPool2D

    kind = type(layer).__name__
    if isinstance(layer, Conv2D):
        k = layer.kernel_size
        return (f"{kind} {layer.in_channels}->{layer.out_channels} {k}x{k}"
                + (f" stride {layer.stride}" if layer.stride != 1 else "") + (f" pad {layer.pad}" if layer.pad else ""))
    if isinstance(layer, Dense):
        return f"{kind} {layer.in_features}->{layer.out_features}"
    if isinstance(layer, (MaxPool2D, AvgPool2D)):
        return f"{kind} {layer.size}"
    if isinstance(layer, Dropout):
        return f"{kind} {layer.p:g}"
    return kind


def profile_layers(trainer, K, batches, steps, n_threads):
    """Time ``steps`` training steps with each step of the model's plan (a fused block, or a
    layer alone; fastnn/fusion.py) timed apart, forward and backward.

    The steps' methods are shadowed by timing closures set on the instances (Sequential calls
    ``step.forward`` / ``step.backward``); deleting those brings the class methods back.
    One row per plan step: ``index`` its first layer, ``layers`` the span ("0-2"), ``layer``
    what it runs ("Conv2D 1->30 5x5 + ReLU + MaxPool2D 2"), FLOPs summed over its layers."""
    from .layers import Conv2D

    model = trainer.model
    plan = model.plan()
    sync = getattr(K, "synchronize", None) or (lambda: None)  # cuda: a step's time ends when the GPU is done

    def timed(method, seconds):
        def run(*args, **kwargs):
            sync()
            start = time.perf_counter()
            out = method(*args, **kwargs)
            sync()
            seconds.append(time.perf_counter() - start)
            return out
        return run

    times = [([], []) for _ in plan]
    step_seconds = []
    for step, (fwd, bwd) in zip(plan, times):
        step.forward, step.backward = timed(step.forward, fwd), timed(step.backward, bwd)
    try:
        for i in range(steps):
            start = time.perf_counter()
            trainer.train_step(*batches[i % len(batches)])
            step_seconds.append(time.perf_counter() - start)
    finally:
        for step in plan:
            del step.forward, step.backward

    sgemm = sgemm_gflops(n_threads)
    from .backends import tuning
    batch_size = batches[0][0].shape[0]
    x_shape, rows, first = (batch_size,) + model.input_shape, [], 0
    for step, (fwd, bwd) in zip(plan, times):
        flops, head = [0, 0], step.layers[0]
        last = first + len(step.layers) - 1
        row = {"index": first, "layers": f"{first}" if last == first else f"{first}-{last}",
               "layer": " + ".join(describe_layer(layer) for layer in step.layers), "kernel": step.kernel,
               "algorithm": "-"}
        if isinstance(head, Conv2D):  # the choice and where it came from: "winograd (tuned)"
            choice = tuning.choice(K.NAME, x_shape, tuple(head.params["W"].shape), head.stride, head.pad)
            row["algorithm"], row["algorithm_source"] = choice.algorithm, choice.source
        for layer in step.layers:
            y_shape = (batch_size,) + layer.output_shape(x_shape[1:])
            flops = [a + b for a, b in zip(flops, layer_flops(layer, x_shape, y_shape))]
            x_shape = y_shape
        row["output_shape"] = list(x_shape[1:])
        for way, seconds, n_flops in (("forward", fwd, flops[0]), ("backward", bwd, flops[1])):
            mean = float(np.mean(seconds)) if seconds else None
            rate = n_flops / mean / 1e9 if mean and n_flops else None
            row.update({f"{way}_ms": mean * 1e3 if mean is not None else None, f"{way}_flops": n_flops,
                        f"{way}_gflops": rate, f"{way}_pct_sgemm": 100 * rate / sgemm if rate else None})
        rows.append(row)
        first += len(step.layers)
    return {"steps": steps, "batch_size": batch_size, "threads": n_threads, "sgemm_gflops": sgemm,
            "step_ms": 1e3 * float(np.mean(step_seconds)), "layers": rows}


# ======================================================================== in the parent process

def worker_env(threads, extra=None):
    """The environment of every worker: the same threads for every library, this fastnn first on the path."""
    env = dict(os.environ)
    n = str(threads)
    env.update(FASTNN_NUM_THREADS=n, NUMBA_NUM_THREADS=n, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n,
               MKL_NUM_THREADS=n)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def run_worker(spec, threads, extra_env=None):
    """Measure one backend (or "torch") in a fresh interpreter: its result, {"skipped": reason},
    or {"error": the last line it wrote to stderr}."""
    cmd = [sys.executable, "-m", "fastnn.bench", "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, env=worker_env(threads, extra_env), capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def summarise(runs, first_compile=None):
    """One backend's runs -> median images/s, its min-max spread, median compile seconds, the runs."""
    ok = [r for r in runs if "error" not in r]
    for r in ok:
        r["images_per_second"] = r["images"] / r["seconds"]
    if not ok:
        return {"error": runs[-1]["error"], "runs": runs}
    rates = [r["images_per_second"] for r in ok]
    summary = {"images_per_second": statistics.median(rates), "images_per_second_min": min(rates),
               "images_per_second_max": max(rates), "images": ok[0]["images"], "data": ok[0]["data"],
               "compile_seconds": statistics.median(r["compile_seconds"] for r in ok),
               "compile_seconds_first_run": first_compile, "failed_runs": len(runs) - len(ok),
               "threadpools": ok[0].get("threadpools"), "runs": runs}
    for r in ok:
        r.pop("threadpools", None)  # the same in every run: kept once
    for key in (TORCH, "torch_mode", "warmup_steps"):  # PyTorch's version, and what its compile seconds cover
        if key in ok[0]:
            summary[key] = ok[0][key]
    profiled = [r for r in ok if "profile" in r]  # only the first run profiles
    if profiled:
        summary["profile"] = profiled[0].pop("profile")
    return summary


def fastest_torch(results):
    """The name of the fastest PyTorch CPU entry measured (eager, channels_last, compile), or None."""
    rates = {n: results[n]["images_per_second"] for n in TORCH_MODES.values()
             if "images_per_second" in results.get(n, {})}
    return max(rates, key=rates.get, default=None)


def add_ratios(results):
    """Each result's median images/s over PyTorch eager's (ratio_to_torch), over the fastest PyTorch
    mode measured (ratio_to_best_torch), and over numpy's; None where the base is missing. The cuda
    backend's PyTorch is PyTorch on the GPU, eager, its only mode there. The fastest mode's name."""
    best = fastest_torch(results)
    for name, r in results.items():
        if "images_per_second" not in r:
            continue
        on_gpu = name in ("cuda", TORCH_CUDA)
        bases = {"torch": TORCH_CUDA if on_gpu else TORCH, "best_torch": TORCH_CUDA if on_gpu else best,
                 "numpy": "numpy"}
        for key, base in bases.items():
            b = results.get(base, {}).get("images_per_second")
            r[f"ratio_to_{key}"] = r["images_per_second"] / b if b else None
    return best


def measure_model(model, names, options, threads, unavailable, out=print):
    """Every name in ``names`` (backends, and PyTorch's entries) on one model, options.repeats times in
    turn. ``unavailable`` {name: reason} collects what cannot run here, so later models do not try again."""
    batch_size, optimizer, lr = model_settings(model, options)
    conv_algo = os.environ.get("FASTNN_CONV_ALGO")  # passed on to the workers; named so it is not forgotten
    out(f"\n{model}: batch {batch_size}, {optimizer} lr {lr if lr is not None else 'default'}, {options.images} "
        f"images per run, {threads} threads, {options.repeats} run(s) per backend in turn, each in its own process"
        + (f", FASTNN_CONV_ALGO={conv_algo}" if conv_algo else ""))
    spec = {"model": model, "batch_size": batch_size, "optimizer": optimizer, "lr": lr, "images": options.images,
            "threads": threads, "data": options.data, "profile_steps": 0}
    runs = {name: [] for name in names}
    first_compile = dict.fromkeys(names)
    width = name_width(names)

    def skipped(name, r):
        if "skipped" in r:
            unavailable[name] = r["skipped"]
            out(f"  {name:{width}s} skipped: {r['skipped']}")
        return "skipped" in r

    with contextlib.ExitStack() as stack:
        # fresh_cache: one empty compile cache per contestant that keeps one (FRESH_CACHE_ENV), filled
        # by its first (first-compile) run and then loaded by every measured run
        caches = {name: {FRESH_CACHE_ENV[name]: stack.enter_context(tempfile.TemporaryDirectory())}
                  for name in names if options.fresh_cache and name in FRESH_CACHE_ENV}
        for repeat in range(options.repeats):
            for name in names:  # A B C A B C ...: a slow spell of the machine hits every backend
                if name == TORCH_CUDA and "cuda" in unavailable:
                    unavailable[name] = "the cuda backend does not run here, so there is nothing to set it beside"
                if name in unavailable:
                    continue
                if repeat == 0 and name in caches:
                    first = run_worker(dict(spec, backend=name), threads, caches[name])
                    if skipped(name, first):
                        continue
                    first_compile[name] = first.get("compile_seconds")
                profile = options.profile_steps if repeat == 0 and not is_torch(name) else 0
                r = run_worker(dict(spec, backend=name, profile_steps=profile), threads, caches.get(name))
                if skipped(name, r):
                    continue
                runs[name].append(r)
                tuned = f"tuning {r['tuning_seconds']:.2f} s, " if r.get("tuning_seconds") else ""
                shown = (f"{r['images'] / r['seconds']:10,.0f} images/s  (compile {r['compile_seconds']:.2f} s, "
                         f"{tuned}{r['data']} images, pid {r['pid']})" if "error" not in r else r["error"])
                out(f"  run {repeat + 1}/{options.repeats}  {name:{width}s} {shown}")
    results = {name: ({"skipped": unavailable[name]} if not runs[name] else summarise(runs[name], first_compile[name]))
               for name in names if runs[name] or name in unavailable}
    best_torch = add_ratios(results)
    print_table(results, options.repeats, out, best_torch)
    for name, r in results.items():
        if "profile" in r:
            print_profile(f"{model} on {name}", r["profile"], out)
    return {"model": model, "batch_size": batch_size, "optimizer": optimizer, "lr": lr, "best_torch": best_torch,
            "results": results}


def contestants(backends=None, torch_modes=DEFAULT_TORCH_MODES):
    """The entries each round measures, in order: fastnn's backends (default: all; names checked), then
    PyTorch's modes (``torch_modes``, keys of TORCH_MODES; none: PyTorch left out) in TORCH_MODES' order,
    and PyTorch on the GPU when the cuda backend is among them."""
    from . import config

    names = list(dict.fromkeys(config.check_backend_name(b) for b in (backends or config.BACKENDS)))
    names += [name for mode, name in TORCH_MODES.items() if mode in torch_modes]
    if torch_modes and "cuda" in names:
        names.append(TORCH_CUDA)
    return names


def torch_missing():
    """Why PyTorch cannot be compared here (it is not installed), or None. Looked up, never imported:
    only its workers import it."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not importable (pip install torch==2.13.0, the CPU build, to compare)"
    return None


def run_benchmarks(models, backends=None, options=None, compare_torch=True, out=print):
    """Measure every backend (default: all of fastnn's; one that cannot run here is reported with
    its reason) and PyTorch in options.torch_modes, each in its own process, on each model; print as
    it goes; the report."""
    from . import config
    from .machine import describe, machine_facts

    options = options or Options()
    threads = options.threads or config.num_threads()
    unknown = [m for m in models if m not in MODEL_DEFAULTS]
    if unknown:
        from .errors import ConfigError
        raise ConfigError(f"unknown model {', '.join(unknown)}: choose from {', '.join(MODEL_DEFAULTS)}")
    names = contestants(backends, options.torch_modes if compare_torch else ())
    missing = torch_missing() if compare_torch else None
    unavailable = {name: missing for name in names if missing and is_torch(name)}
    if TORCH_CUDA in unavailable:
        unavailable[TORCH_CUDA] = "torch is not importable (a CUDA build of torch compares with cuda)"
    facts = machine_facts(threads)
    for line in describe(facts):
        out(line)
    reports = {model: measure_model(model, names, options, threads, unavailable, out) for model in models}
    return {"machine": facts, "images": options.images, "threads": threads, "repeats": options.repeats,
            "options": asdict(options), "parent_pid": os.getpid(), "models": reports}


def failures(report):
    """["model/backend: error", ...] for every measurement whose runs all failed (a skip is no failure)."""
    return [f"{model}/{name}: {r['error']}" for model, m in report["models"].items()
            for name, r in m["results"].items() if "error" in r]


def name_width(names):
    return max([10, *map(len, names)])  # "torch-channels_last" is wider than a backend's name


def print_table(results, repeats, out=print, best_torch=None):
    """The medians, ratios and compile seconds of one model; ``best_torch`` names the entry that the
    "vs best" column divides by (add_ratios)."""
    def cell(value, fmt, width):
        return f"{'-':>{width}s}" if value is None else f"{value:{width}{fmt}}"

    width = name_width(results)
    out(f"\n{'backend':{width}s} {'images/s':>10s} {'min-max':>17s} {'vs torch':>9s} {'vs best':>9s} "
        f"{'vs numpy':>9s} {'compile s':>10s} {'first run':>10s}")
    for name, r in results.items():
        if "images_per_second" not in r:
            why = f"skipped: {shorten(r['skipped'], 90, placeholder=' ...')}" if "skipped" in r else r["error"]
            out(f"{name:{width}s} {'-':>10s}  {why}")
            continue
        spread = f"{r['images_per_second_min']:,.0f}-{r['images_per_second_max']:,.0f}" if repeats > 1 else "-"
        ratios = [f"{v:8.2f}x" if v is not None else f"{'-':>9s}"
                  for v in (r["ratio_to_torch"], r["ratio_to_best_torch"], r["ratio_to_numpy"])]
        out(f"{name:{width}s} {r['images_per_second']:10,.0f} {spread:>17s} {' '.join(ratios)} "
            f"{cell(r['compile_seconds'], '.2f', 10)} {cell(r['compile_seconds_first_run'], '.2f', 10)}"
            + (f"  ({r['failed_runs']} run(s) failed)" if r["failed_runs"] else ""))
    if best_torch:
        out(f"vs torch: over PyTorch eager; vs best: over the fastest PyTorch measured here, {best_torch}"
            + ("; compile s: a warm-up apart from images/s (torch-compile: its first "
               f"{TORCH_COMPILE_WARMUP_STEPS} steps)" if "images_per_second" in results.get(TORCH_MODES["compile"], {})
               else ""))


def print_profile(title, p, out=print):
    """The per-layer table of one backend's profile (see profile_layers)."""
    def cell(value, fmt, width, unit=""):
        return f"{'-':>{width}s}" if value is None else f"{value:{width - len(unit)}{fmt}}{unit}"

    out(f"\n{title}: per step of the plan (fused blocks as one), mean of {p['steps']} steps of batch "
        f"{p['batch_size']}, {p['threads']} thread(s); sgemm 1024^3 (scipy BLAS, same threads) "
        f"{p['sgemm_gflops']:.1f} GFLOP/s")
    out(f"  {'layers':46s} {'output':>10s}  {'algorithm':20s} {'fwd ms':>8s} {'bwd ms':>8s} "
        f"{'fwd GFLOP/s':>11s} {'bwd GFLOP/s':>11s} {'fwd %sgemm':>10s} {'bwd %sgemm':>10s}")
    for row in p["layers"]:
        name = f"{row['layers']:>5s} {row['layer']}"
        shape = "x".join(map(str, row["output_shape"]))
        source = row.get("algorithm_source")  # tuned, table, forced or only: why this algorithm
        algorithm = row["algorithm"] + (f" ({source})" if source else "")
        out(f"  {name:46s} {shape:>10s}  {algorithm:20s} {cell(row['forward_ms'], '.2f', 8)} "
            f"{cell(row['backward_ms'], '.2f', 8)} {cell(row['forward_gflops'], '.1f', 11)} "
            f"{cell(row['backward_gflops'], '.1f', 11)} {cell(row['forward_pct_sgemm'], '.0f', 10, '%')} "
            f"{cell(row['backward_pct_sgemm'], '.0f', 10, '%')}")
    fwd = sum(row["forward_ms"] or 0 for row in p["layers"])
    bwd = sum(row["backward_ms"] or 0 for row in p["layers"])
    flops = sum(row["forward_flops"] + row["backward_flops"] for row in p["layers"])
    rate = flops / p["step_ms"] / 1e6
    out(f"  step {p['step_ms']:.2f} ms = forward {fwd:.2f} + backward {bwd:.2f} + the rest (loss, optimizer"
        f"{', layers not timed one by one' if any(row['forward_ms'] is None for row in p['layers']) else ''}) "
        f"{p['step_ms'] - fwd - bwd:.2f}; {flops / 1e9:.3f} GFLOP per step, "
        f"{rate:.1f} GFLOP/s = {100 * rate / p['sgemm_gflops']:.0f}% of sgemm")


def plot_label(name):
    """A bar's label: "PyTorch" for eager, "PyTorch" over its mode for the others."""
    if name == TORCH:
        return "PyTorch"
    return f"PyTorch\n{name.removeprefix('torch-')}" if is_torch(name) else name


def plot_report(report, path):
    """Bars of median images/s per backend, PyTorch beside them in its own colour, min-max as error
    bars; one panel per model, each on its own scale (mlp trains 100x faster than pytorch-net)."""
    from .plot import require_matplotlib
    plt = require_matplotlib()

    models = report["models"]
    bars = max(len(m["results"]) for m in models.values())  # PyTorch's modes widen a panel
    panel = max(3.3, 0.6 * bars)
    fig, axes = plt.subplots(1, len(models), figsize=(max(6.0, 1.5 + panel * len(models)), 4.6), squeeze=False)
    for ax, (model, m) in zip(axes[0], models.items()):
        measured = {n: r for n, r in m["results"].items() if "images_per_second" in r}
        medians = [r["images_per_second"] for r in measured.values()]
        spread = [[r["images_per_second"] - r["images_per_second_min"] for r in measured.values()],
                  [r["images_per_second_max"] - r["images_per_second"] for r in measured.values()]]
        labels = [plot_label(n) for n in measured]
        colors = ["tab:orange" if is_torch(n) else "tab:blue" for n in measured]
        bars = ax.bar(labels, medians, yerr=spread, capsize=3, color=colors)
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in medians], fontsize=8, padding=2)
        ax.tick_params(axis="x", labelsize=8)
        missing = [n for n in m["results"] if n not in measured]
        ax.set_title(f"{model}\nbatch {m['batch_size']}, {m['optimizer']}", fontsize=10)
        if missing:
            ax.set_xlabel("not measured: " + ", ".join(missing), fontsize=8)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("training images/s (median, min-max)")
    facts = report["machine"]
    fig.suptitle(f"fastnn training throughput\n{facts['cpu']}, {report['threads']} threads, "
                 f"{report['repeats']} run(s) per backend, each in its own process", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ======================================================================== the command line

def torch_modes_arg(text):
    """--torch-modes: comma-separated keys of TORCH_MODES, each once."""
    modes = [mode.strip() for mode in text.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in TORCH_MODES]
    if unknown or not modes:
        what = f"unknown PyTorch mode {unknown[0]!r}" if unknown else f"no PyTorch mode in {text!r}"
        raise argparse.ArgumentTypeError(f"{what}: choose from {', '.join(TORCH_MODES)}")
    return list(dict.fromkeys(modes))


def add_arguments(p):
    """The flags of `fastnn bench` and of benchmarks/train_throughput.py: one list for both."""
    from .cli import directory, positive_float, positive_int
    from .models import MODELS
    from .optim import OPTIMIZERS

    p.add_argument("--model", choices=(*MODELS, "all"), default="simple-cnn",
                   help="a named model, or all of them in turn (default simple-cnn)")
    p.add_argument("--backends", help="comma-separated fastnn backends (default: all; one that cannot run "
                   "here is listed with its reason)")
    p.add_argument("--images", type=positive_int, default=DEFAULT_IMAGES,
                   help="images to train on per run (default %(default)s)")
    p.add_argument("--repeats", type=positive_int, default=DEFAULT_REPEATS,
                   help="runs per backend, in turn A B C A B C ...; the median and min-max are reported "
                        "(default %(default)s)")
    p.add_argument("--threads", type=positive_int, help="threads of every backend and of PyTorch (default: "
                   "$FASTNN_NUM_THREADS, else the cores this process may use)")
    p.add_argument("--batch-size", type=positive_int,
                   help="default: " + ", ".join(f"{b} {m}" for m, (b, _) in MODEL_DEFAULTS.items()))
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS),
                   help="default: " + ", ".join(f"{o} {m}" for m, (_, o) in MODEL_DEFAULTS.items())
                        + f" (PyTorch compares on {', '.join(DEFAULT_LR)})")
    p.add_argument("--lr", type=positive_float,
                   help="default: " + ", ".join(f"{lr:g} {o}" for o, lr in DEFAULT_LR.items())
                        + ", else the optimizer's own")
    which_torch = p.add_mutually_exclusive_group()
    which_torch.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    which_torch.add_argument("--torch-modes", type=torch_modes_arg, default=list(DEFAULT_TORCH_MODES),
                             metavar="MODES", help=f"comma-separated PyTorch modes, each an entry of its own: "
                             f"{', '.join(TORCH_MODES)} (default: eager); the table's 'vs best' column divides "
                             "by the fastest, and torch.compile's compilation counts as compile seconds")
    p.add_argument("--data", metavar="DIR", type=directory, help="the MNIST directory (default: $FASTNN_DATA, "
                   "then the user cache; random images if none: throughput does not depend on the pixels)")
    p.add_argument("--fresh-cache", action="store_true",
                   help="first run Numba-based backends with an empty NUMBA_CACHE_DIR (first-compile seconds)")
    p.add_argument("--profile", action="store_true", help="per-layer times, GFLOP/s, %% of sgemm and "
                   "convolution algorithm of each fastnn backend (in its first run)")
    p.add_argument("--profile-steps", type=positive_int, default=5,
                   help="training steps the profile averages (default %(default)s)")
    p.add_argument("--json", metavar="PATH", help="write the report here")
    p.add_argument("--plot", metavar="PATH", help="draw images/s per backend and model here (PNG; needs "
                   "fastnn[plot])")
    return p


def run_from_args(args, out=print):
    """Run what add_arguments' flags ask for; the report. Output files and matplotlib are checked
    first, so a benchmark of minutes never ends in a failure to write its result."""
    from .cli import check_output_paths, write_json

    check_output_paths(json=args.json, plot=args.plot)
    if args.plot:
        from .plot import require_matplotlib
        require_matplotlib()
    options = Options(images=args.images, threads=args.threads, repeats=args.repeats, batch_size=args.batch_size,
                      optimizer=args.optimizer, lr=args.lr, fresh_cache=args.fresh_cache,
                      profile_steps=args.profile_steps if args.profile else 0, data=args.data,
                      torch_modes=() if args.no_torch else tuple(args.torch_modes))
    models = list(MODEL_DEFAULTS) if args.model == "all" else [args.model]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    report = run_benchmarks(models, backends, options, compare_torch=not args.no_torch, out=out)
    if args.json:
        write_json(args.json, report)
        out(f"\nwrote {args.json}")
    if args.plot:
        plot_report(report, args.plot)
        out(f"wrote {args.plot}")
    return report


if __name__ == "__main__":  # a worker: python -m fastnn.bench --worker SPEC_JSON (see run_worker)
    worker_parser = argparse.ArgumentParser(prog="python -m fastnn.bench", description="one benchmark worker")
    worker_parser.add_argument("--worker", required=True, metavar="SPEC_JSON")
    worker_main(worker_parser.parse_args().worker)
