"""Training throughput (images/s) of fastnn's backends next to PyTorch on the same architecture.

    python benchmarks/train_throughput.py --model simple-cnn --backends numpy,numba,cython \
        --images 6000 --threads 2 --repeats 3 --json out.json
    python benchmarks/train_throughput.py --model all --images 1000 --threads 2
    python benchmarks/train_throughput.py --model deep-cnn --backends numba --profile   # per-layer table

Each measurement runs in its own fresh subprocess with the same thread count
(fastnn.threads.set_threads / torch.set_num_threads, and the OMP/OpenBLAS/MKL variables), so no
backend inherits another's threads, caches or warm BLAS. In each: build the model, warm up (one
step: Numba compiles or loads its cache; timed apart and reported as compile seconds), then time
training steps on real MNIST batches (FASTNN_DATA, else ../shared/data/mnist; synthetic images if
neither is there) until ``--images`` images have been seen. ``--fresh-cache`` first runs each
Numba-based backend once with an empty NUMBA_CACHE_DIR, so the table shows compile seconds of a
first run and of a cached run.

``--repeats R`` measures every backend R times in the order A B C A B C ..., so a slow spell of
a shared machine hits all of them; the table shows the median images/s and the min-max spread,
and the ratios are ratios of medians.

``--profile`` adds, in each fastnn worker's first run, ``--profile-steps`` more steps after the
timed ones with every layer's forward and backward timed apart: milliseconds, FLOPs, GFLOP/s and
the share of the sgemm rate measured in the same process with the same threads, and for each
Conv2D the algorithm the backend chose (its ``conv2d_algorithm``, when it exports one;
FASTNN_CONV_ALGO, passed on to the workers, forces one).

PyTorch is for comparison only (never a fastnn dependency): its model is read off fastnn's
layer by layer (``torch_twin``); same optimizer and learning rate, same batch size,
CrossEntropyLoss; its own default initialisation.

JSON (``--json``): for one model {model, batch_size, optimizer, lr, images, threads, repeats,
results: {backend: {images_per_second (median), images_per_second_min, _max, compile_seconds,
ratio_to_torch, ratio_to_numpy, runs: [each run], profile}}}; for ``--model all``
{images, threads, repeats, models: {model: that}}.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    # model: (batch size, optimizer) by default, as in the examples they come from
    "simple-cnn": (100, "adam"),
    "pytorch-net": (64, "adadelta"),
    "deep-cnn": (100, "adam"),
    "mlp": (100, "adam"),
    "speedrun-net": (256, "adam"),
}
LR = {"adam": 1e-3, "adadelta": 1.0, "sgd": 0.01}  # the learning rate when --lr is not given
NUMBA_BASED = ("numba", "cuda")
REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


# ------------------------------------------------------------------------ in the subprocess

def load_batches(n_images, batch_size, seed=0):
    """(x, y) host arrays of at least one batch: real MNIST training images when found, else random."""
    n = max(n_images, batch_size)
    try:
        from fastnn import config
        from fastnn.data import load_mnist
        data_dir = config.data_dir() or (SHARED_MNIST if SHARED_MNIST.exists() else None)
        x, y, _, _ = load_mnist("mnist", data_dir, download_missing=False, progress=False)
        reps = -(-n // len(x))
        return np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n], "mnist"
    except Exception:  # noqa: BLE001  no data here: throughput does not depend on the pixels
        rng = np.random.default_rng(seed)
        return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n), "synthetic"


def make_batches(x, y, batch_size, prepare):
    """Consecutive full batches, each put where the step wants it by ``prepare(xb, yb)``."""
    return [prepare(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x) - batch_size + 1, batch_size)]


def time_steps(step, n_images, batch_size, batches):
    """Run ``step`` on the batches in turn until n_images images are seen; (images, seconds)."""
    steps = max(1, n_images // batch_size)
    start = time.perf_counter()
    for i in range(steps):
        loss = step(*batches[i % len(batches)])  # the loss comes back to the host: the step is finished
    seconds = time.perf_counter() - start
    if not np.isfinite(loss):
        raise RuntimeError(f"the loss became {loss}")
    return steps * batch_size, seconds


def measure_fastnn(backend, model_name, batch_size, optimizer, lr, n_images, n_threads, profile_steps=0):
    from fastnn import backends, models, optim, threads
    from fastnn.train import Trainer

    K = backends.use(backend)
    threads.set_threads(n_threads)  # after loading: limits the BLAS/OpenMP the backend brought in
    trainer = Trainer(models.build(model_name, seed=0), optim.make(optimizer, lr=lr), batch_size=batch_size,
                      seed=0, progress=False)
    compile_seconds = trainer.warmup()
    x, y, source = load_batches(n_images, batch_size)
    batches = make_batches(x, y, batch_size, lambda xb, yb: (K.to_device(xb), K.to_device(yb)))
    images, seconds = time_steps(trainer.train_step, n_images, batch_size, batches)
    result = dict(compile_seconds=compile_seconds, images=images, seconds=seconds, data=source)
    if profile_steps:  # after the timed steps, so that asking for a profile leaves images/s as it was
        result["profile"] = profile_layers(trainer, K, batches, profile_steps, n_threads)
    return result


# ---- the per-layer profile (--profile)

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
    from fastnn.layers import Conv2D, Dense

    if isinstance(layer, Conv2D):
        n, c = x_shape[:2]
        f, oh, ow = y_shape[1:]
        one = 2 * n * f * c * layer.kernel_size ** 2 * oh * ow
        return one, one * (2 if layer.need_dx else 1)  # backward-weights, and backward-data unless skipped
    if isinstance(layer, Dense):
        one = 2 * x_shape[0] * layer.in_features * layer.out_features
        return one, one * (2 if layer.need_dx else 1)  # dW, and dx unless skipped
    return 0, 0


def describe(layer):
    """A short name for a profile row: "Conv2D 16->32 3x3 pad 1", "Dense 1024->50", "MaxPool2D 2"."""
    from fastnn.layers import AvgPool2D, Conv2D, Dense, Dropout, MaxPool2D

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
    from fastnn.layers import Conv2D

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
    # the contract's name, else the name first proposed for it
    algorithm = getattr(K, "conv2d_algorithm", None) or getattr(K, "conv_algorithm", None)
    batch_size = batches[0][0].shape[0]
    x_shape, rows, first = (batch_size,) + model.input_shape, [], 0
    for step, (fwd, bwd) in zip(plan, times):
        flops, head = [0, 0], step.layers[0]
        row = dict(index=first, layers=f"{first}" if len(step.layers) == 1 else f"{first}-{first + len(step.layers) - 1}",
                   layer=" + ".join(describe(layer) for layer in step.layers), kernel=step.kernel, algorithm="-")
        if isinstance(head, Conv2D) and algorithm is not None:
            row["algorithm"] = algorithm(x_shape, tuple(head.params["W"].shape), head.stride, head.pad)
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
    return dict(steps=steps, batch_size=batch_size, threads=n_threads, sgemm_gflops=sgemm,
                step_ms=1e3 * float(np.mean(step_seconds)), layers=rows)


# ---- PyTorch

def torch_twin(model):
    """The same architecture in PyTorch, read off a fastnn Sequential layer by layer, so the two
    cannot drift apart. PyTorch's default initialisation (the weights are not copied)."""
    import torch.nn as nn
    from fastnn import layers as L

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
        raise SystemExit(f"{model.name}: no PyTorch twin of layer {layer!r}")
    return nn.Sequential(*(twin(layer) for layer in model.layers))


def measure_torch(model_name, batch_size, optimizer, lr, n_images, n_threads):
    import torch
    import torch.nn.functional as F
    from fastnn import models

    torch.set_num_threads(n_threads)
    torch.manual_seed(0)
    model = torch_twin(models.build(model_name))
    opt = {"adam": torch.optim.Adam, "adadelta": torch.optim.Adadelta, "sgd": torch.optim.SGD}[optimizer]
    opt = opt(model.parameters(), lr=lr)
    model.train()

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.item()

    x, y, source = load_batches(n_images, batch_size)
    batches = make_batches(x, y, batch_size,
                           lambda xb, yb: (torch.from_numpy(np.ascontiguousarray(xb)), torch.from_numpy(yb)))
    start = time.perf_counter()
    step(*batches[0])  # first step: allocations
    compile_seconds = time.perf_counter() - start
    images, seconds = time_steps(step, n_images, batch_size, batches)
    return dict(compile_seconds=compile_seconds, images=images, seconds=seconds, data=source,
                torch=torch.__version__)


def worker(args):
    batch_size, optimizer, lr = settings(args, args.model)
    if args.worker == "torch":
        result = measure_torch(args.model, batch_size, optimizer, lr, args.images, args.threads)
    else:
        result = measure_fastnn(args.worker, args.model, batch_size, optimizer, lr, args.images, args.threads,
                                args.profile_steps if args.profile else 0)
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------- the parent

def settings(args, model):
    """(batch size, optimizer, learning rate) from the flags, else the model's defaults."""
    batch_size, optimizer = SETTINGS[model]
    optimizer = args.optimizer or optimizer
    if optimizer not in LR:
        raise SystemExit(f"--optimizer: choose one of {', '.join(LR)} (PyTorch needs the same one)")
    return args.batch_size or batch_size, optimizer, args.lr if args.lr is not None else LR[optimizer]


def run_worker(args, model, name, extra_env=None, profile=False):
    """Measure one backend (or "torch") in a fresh interpreter; its result dict, or {"error": ...}."""
    env = dict(os.environ)
    n = str(args.threads)
    env.update(FASTNN_NUM_THREADS=n, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n,
               NUMBA_NUM_THREADS=env.get("NUMBA_NUM_THREADS", n))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra_env or {})
    cmd = [sys.executable, __file__, "--worker", name, "--model", model, "--images", str(args.images),
           "--threads", n]
    for flag in ("batch_size", "optimizer", "lr"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if profile and name != "torch":
        cmd += ["--profile", "--profile-steps", str(args.profile_steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def summarise(runs, first_compile):
    """One backend's runs -> median images/s, its min-max spread, median compile seconds, the runs."""
    ok = [r for r in runs if "error" not in r]
    for r in ok:
        r["images_per_second"] = r["images"] / r["seconds"]
    if not ok:
        return {"error": runs[-1]["error"], "runs": runs}
    rates = [r["images_per_second"] for r in ok]
    summary = dict(images_per_second=statistics.median(rates), images_per_second_min=min(rates),
                   images_per_second_max=max(rates), images=ok[0]["images"], data=ok[0]["data"],
                   compile_seconds=statistics.median(r["compile_seconds"] for r in ok),
                   compile_seconds_first_run=first_compile, failed_runs=len(runs) - len(ok), runs=runs)
    if "torch" in ok[0]:
        summary["torch"] = ok[0]["torch"]
    profiled = [r for r in ok if "profile" in r]  # only the first run profiles
    if profiled:
        summary["profile"] = profiled[0].pop("profile")
    return summary


def measure_model(args, model, names):
    """Every backend in ``names`` on one model, --repeats times in turn; the JSON-able report."""
    batch_size, optimizer, lr = settings(args, model)
    print(f"\n{model}: batch {batch_size}, {optimizer} lr {lr}, {args.images} images, {args.threads} threads, "
          f"{args.repeats} run(s) per backend, each in its own process"
          + (f", FASTNN_CONV_ALGO={os.environ['FASTNN_CONV_ALGO']}" if os.environ.get("FASTNN_CONV_ALGO") else ""),
          flush=True)
    runs = {name: [] for name in names}
    first_compile = dict.fromkeys(names)
    with contextlib.ExitStack() as stack:
        # --fresh-cache: one empty Numba cache per backend, filled by its first (first-compile) run
        # and then loaded by every measured run
        caches = {name: {"NUMBA_CACHE_DIR": stack.enter_context(tempfile.TemporaryDirectory())}
                  for name in names if args.fresh_cache and name in NUMBA_BASED}
        for repeat in range(args.repeats):
            for name in names:  # A B C A B C ...: a slow spell of the machine hits every backend
                if repeat == 0 and name in caches:
                    first_compile[name] = run_worker(args, model, name, caches[name]).get("compile_seconds")
                r = run_worker(args, model, name, caches.get(name), profile=args.profile and repeat == 0)
                runs[name].append(r)
                shown = f"{r['images'] / r['seconds']:10,.0f} images/s" if "error" not in r else r["error"]
                print(f"  run {repeat + 1}/{args.repeats}  {name:7s} {shown}", flush=True)
    results = {name: summarise(runs[name], first_compile[name]) for name in names}

    def ratio(name, base):
        a, b = results[name], results.get(base, {})
        if "images_per_second" in a and "images_per_second" in b:
            return a["images_per_second"] / b["images_per_second"]
        return None

    print(f"\n{'backend':8s} {'images/s':>10s} {'min-max':>17s} {'vs torch':>9s} {'vs numpy':>9s} "
          f"{'compile s':>10s} {'first run':>10s}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:8s} {'-':>10s}  {r['error']}")
            continue
        r["ratio_to_torch"], r["ratio_to_numpy"] = ratio(name, "torch"), ratio(name, "numpy")
        spread = f"{r['images_per_second_min']:,.0f}-{r['images_per_second_max']:,.0f}" if args.repeats > 1 else "-"
        cells = [f"{r['images_per_second']:10,.0f}", f"{spread:>17s}"]
        cells += [f"{v:8.2f}x" if v is not None else f"{'-':>9s}" for v in (r["ratio_to_torch"], r["ratio_to_numpy"])]
        cells += [f"{r['compile_seconds']:10.2f}",
                  f"{r['compile_seconds_first_run']:10.2f}" if r.get("compile_seconds_first_run") else f"{'-':>10s}"]
        print(f"{name:8s} " + " ".join(cells) + (f"  ({r['failed_runs']} run(s) failed)" if r["failed_runs"] else ""))
    for name, r in results.items():
        if "profile" in r:
            print_profile(f"{model} on {name}", r["profile"])
    return dict(model=model, batch_size=batch_size, optimizer=optimizer, lr=lr, images=args.images,
                threads=args.threads, repeats=args.repeats, results=results)


def print_profile(title, p):
    """The per-layer table of one backend's profile (see profile_layers)."""
    def cell(value, fmt, width, unit=""):
        return f"{'-':>{width}s}" if value is None else f"{value:{width - len(unit)}{fmt}}{unit}"

    print(f"\n{title}: per step of the plan (fused blocks as one), mean of {p['steps']} steps of batch "
          f"{p['batch_size']}, {p['threads']} thread(s); sgemm 1024^3 (scipy BLAS, same threads) "
          f"{p['sgemm_gflops']:.1f} GFLOP/s")
    print(f"  {'layers':46s} {'output':>10s}  {'algorithm':16s} {'fwd ms':>8s} {'bwd ms':>8s} "
          f"{'fwd GFLOP/s':>11s} {'bwd GFLOP/s':>11s} {'fwd %sgemm':>10s} {'bwd %sgemm':>10s}")
    for row in p["layers"]:
        name = f"{row['layers']:>5s} {row['layer']}"
        shape = "x".join(map(str, row["output_shape"]))
        print(f"  {name:46s} {shape:>10s}  {row['algorithm']:16s} {cell(row['forward_ms'], '.2f', 8)} "
              f"{cell(row['backward_ms'], '.2f', 8)} {cell(row['forward_gflops'], '.1f', 11)} "
              f"{cell(row['backward_gflops'], '.1f', 11)} {cell(row['forward_pct_sgemm'], '.0f', 10, '%')} "
              f"{cell(row['backward_pct_sgemm'], '.0f', 10, '%')}")
    fwd = sum(row["forward_ms"] or 0 for row in p["layers"])
    bwd = sum(row["backward_ms"] or 0 for row in p["layers"])
    flops = sum(row["forward_flops"] + row["backward_flops"] for row in p["layers"])
    rate = flops / p["step_ms"] / 1e6
    print(f"  step {p['step_ms']:.2f} ms = forward {fwd:.2f} + backward {bwd:.2f} + the rest (loss, optimizer"
          f"{', layers not timed one by one' if any(row['forward_ms'] is None for row in p['layers']) else ''}) "
          f"{p['step_ms'] - fwd - bwd:.2f}; {flops / 1e9:.3f} GFLOP per step, "
          f"{rate:.1f} GFLOP/s = {100 * rate / p['sgemm_gflops']:.0f}% of sgemm")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=[*SETTINGS, "all"], default="simple-cnn",
                   help="a named model, or all of them in turn (default simple-cnn)")
    p.add_argument("--backends", default="numpy,numba,cython",
                   help="comma-separated fastnn backends (default: numpy,numba,cython)")
    p.add_argument("--images", type=int, default=6000, help="images to train on per run (default 6000)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads for every backend and for PyTorch (default: all cores)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per backend, in turn A B C A B C ...; median and min-max reported (default 1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: " + ", ".join(f"{b} {m}" for m, (b, _) in SETTINGS.items()))
    p.add_argument("--optimizer", default=None,
                   help="default: " + ", ".join(f"{o} {m}" for m, (_, o) in SETTINGS.items()))
    p.add_argument("--lr", type=float, default=None,
                   help="default: " + ", ".join(f"{lr:g} {o}" for o, lr in LR.items()))
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--fresh-cache", action="store_true",
                   help="first run Numba-based backends with an empty NUMBA_CACHE_DIR (first-compile seconds)")
    p.add_argument("--profile", action="store_true",
                   help="per-layer times, GFLOP/s, %% of sgemm and conv algorithm of each fastnn backend (first run)")
    p.add_argument("--profile-steps", type=int, default=5, help="training steps the profile averages (default 5)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.profile_steps < 1:
        p.error("--repeats and --profile-steps must be 1 or more")
    if args.worker:
        return worker(args)

    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.no_torch:
        try:
            import torch  # noqa: F401  (only to know whether to compare)
            names.append("torch")
        except ImportError:
            print("torch is not importable: no PyTorch comparison")
    model_names = list(SETTINGS) if args.model == "all" else [args.model]
    reports = {model: measure_model(args, model, names) for model in model_names}
    report = (reports[args.model] if args.model != "all"
              else dict(images=args.images, threads=args.threads, repeats=args.repeats, models=reports))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
