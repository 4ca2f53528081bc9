"""Training throughput (images/s) of fastnn's backends next to PyTorch on the same architecture.

    python benchmarks/train_throughput.py --model simple-cnn --backends numpy,numba,cython \
        --images 6000 --threads 2 --json out.json

Each backend (and PyTorch, when ``torch`` is importable) runs in its own fresh subprocess with
the same thread count (fastnn.threads.set_threads / torch.set_num_threads, and the
OMP/OpenBLAS/MKL variables), so no backend inherits another's threads, caches or warm BLAS.
In each: build the model, warm up (one step: Numba compiles or loads its cache; timed apart
and reported as compile seconds), then time training steps on real MNIST batches (FASTNN_DATA,
else ../shared/data/mnist; synthetic images if neither is there) until ``--images`` images
have been seen. ``--fresh-cache`` first runs each Numba-based backend once with an empty
NUMBA_CACHE_DIR, so the table shows compile seconds of a first run and of a cached run.

PyTorch is for comparison only (never a fastnn dependency): same layers, same optimizer and
learning rate, same batch size, CrossEntropyLoss; its own default initialisation.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {
    # model: (batch size, optimizer, learning rate) by default, as in the examples they come from
    "simple-cnn": (100, "adam", 1e-3),
    "pytorch-net": (64, "adadelta", 1.0),
}
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


def time_steps(step, n_images, batch_size, x, y, prepare):
    """Run ``step`` on consecutive batches until n_images images are seen; (images, seconds)."""
    batches = [prepare(x[i:i + batch_size], y[i:i + batch_size])
               for i in range(0, len(x) - batch_size + 1, batch_size)]
    steps = max(1, n_images // batch_size)
    start = time.perf_counter()
    for i in range(steps):
        loss = step(*batches[i % len(batches)])
    seconds = time.perf_counter() - start
    if not np.isfinite(loss):
        raise RuntimeError(f"the loss became {loss}")
    return steps * batch_size, seconds


def measure_fastnn(backend, model_name, batch_size, optimizer, lr, n_images, n_threads):
    from fastnn import backends, models, optim, threads
    from fastnn.train import Trainer

    K = backends.use(backend)
    threads.set_threads(n_threads)  # after loading: limits the BLAS/OpenMP the backend brought in
    trainer = Trainer(models.build(model_name, seed=0), optim.make(optimizer, lr=lr), batch_size=batch_size,
                      seed=0, progress=False)
    compile_seconds = trainer.warmup()
    x, y, source = load_batches(n_images, batch_size)
    images, seconds = time_steps(trainer.train_step, n_images, batch_size, x, y,
                                 lambda xb, yb: (K.to_device(xb), K.to_device(yb)))
    return dict(compile_seconds=compile_seconds, images=images, seconds=seconds, data=source)


def torch_model(model_name):
    import torch.nn as nn
    if model_name == "simple-cnn":
        return nn.Sequential(nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(4320, 100), nn.ReLU(), nn.Linear(100, 10))
    if model_name == "pytorch-net":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(128, 10))
    raise SystemExit(f"no PyTorch twin of model {model_name!r}")


def measure_torch(model_name, batch_size, optimizer, lr, n_images, n_threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(n_threads)
    torch.manual_seed(0)
    model = torch_model(model_name)
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
    start = time.perf_counter()
    step(torch.from_numpy(x[:batch_size]), torch.from_numpy(y[:batch_size]))  # first step: allocations
    compile_seconds = time.perf_counter() - start
    images, seconds = time_steps(step, n_images, batch_size, x, y,
                                 lambda xb, yb: (torch.from_numpy(np.ascontiguousarray(xb)), torch.from_numpy(yb)))
    return dict(compile_seconds=compile_seconds, images=images, seconds=seconds, data=source,
                torch=torch.__version__)


def worker(args):
    batch_size, optimizer, lr = settings(args)
    if args.worker == "torch":
        result = measure_torch(args.model, batch_size, optimizer, lr, args.images, args.threads)
    else:
        result = measure_fastnn(args.worker, args.model, batch_size, optimizer, lr, args.images, args.threads)
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------- the parent

LR = {"adam": 1e-3, "adadelta": 1.0, "sgd": 0.01}  # defaults when --lr is not given


def settings(args):
    """(batch size, optimizer, learning rate) from the flags, else the model's defaults."""
    batch_size, optimizer, _ = MODELS[args.model]
    optimizer = args.optimizer or optimizer
    if optimizer not in LR:
        raise SystemExit(f"--optimizer: choose one of {', '.join(LR)} (PyTorch needs the same one)")
    return args.batch_size or batch_size, optimizer, args.lr if args.lr is not None else LR[optimizer]


def run_worker(args, name, extra_env=None):
    """Measure one backend (or "torch") in a fresh interpreter; its result dict, or {"error": ...}."""
    env = dict(os.environ)
    n = str(args.threads)
    env.update(FASTNN_NUM_THREADS=n, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n,
               NUMBA_NUM_THREADS=env.get("NUMBA_NUM_THREADS", n))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra_env or {})
    cmd = [sys.executable, __file__, "--worker", name, "--model", args.model, "--images", str(args.images),
           "--threads", n]
    for flag in ("batch_size", "optimizer", "lr"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="simple-cnn")
    p.add_argument("--backends", default="numpy,numba,cython",
                   help="comma-separated fastnn backends (default: numpy,numba,cython)")
    p.add_argument("--images", type=int, default=6000, help="images to train on per backend (default 6000)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads for every backend and for PyTorch (default: all cores)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 100 simple-cnn, 64 pytorch-net")
    p.add_argument("--optimizer", default=None, help="default: adam simple-cnn, adadelta pytorch-net")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-3 adam, 1.0 adadelta")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--fresh-cache", action="store_true",
                   help="first run Numba-based backends with an empty NUMBA_CACHE_DIR (first-compile seconds)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    batch_size, optimizer, lr = settings(args)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.no_torch:
        try:
            import torch  # noqa: F401  (only to know whether to compare)
            names.append("torch")
        except ImportError:
            print("torch is not importable: no PyTorch comparison")
    print(f"{args.model}: batch {batch_size}, {optimizer} lr {lr}, "
          f"{args.images} images, {args.threads} threads, each backend in its own process", flush=True)

    results = {}
    for name in names:
        first_compile = None
        if args.fresh_cache and name in NUMBA_BASED:
            with tempfile.TemporaryDirectory() as cache:
                fresh = run_worker(args, name, {"NUMBA_CACHE_DIR": cache})
                first_compile = fresh.get("compile_seconds")
                # the measured run below then loads from this (now filled) cache
                r = run_worker(args, name, {"NUMBA_CACHE_DIR": cache})
        else:
            r = run_worker(args, name)
        if "error" not in r:
            r["images_per_second"] = r["images"] / r["seconds"]
            r["compile_seconds_first_run"] = first_compile
        results[name] = r
        shown = f"{r['images_per_second']:10,.0f} images/s" if "error" not in r else r["error"]
        print(f"  {name:7s} {shown}", flush=True)

    def ratio(name, base):
        a, b = results.get(name, {}), results.get(base, {})
        if "images_per_second" in a and "images_per_second" in b:
            return a["images_per_second"] / b["images_per_second"]
        return None

    print(f"\n{'backend':8s} {'images/s':>10s} {'vs torch':>9s} {'vs numpy':>9s} {'compile s':>10s} {'first run':>10s}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:8s} {'-':>10s}  {r['error']}")
            continue
        r["ratio_to_torch"], r["ratio_to_numpy"] = ratio(name, "torch"), ratio(name, "numpy")
        cells = [f"{r['images_per_second']:10,.0f}"]
        cells += [f"{v:8.2f}x" if v is not None else f"{'-':>9s}" for v in (r["ratio_to_torch"], r["ratio_to_numpy"])]
        cells += [f"{r['compile_seconds']:10.2f}",
                  f"{r['compile_seconds_first_run']:10.2f}" if r.get("compile_seconds_first_run") else f"{'-':>10s}"]
        print(f"{name:8s} " + " ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(dict(model=args.model, batch_size=batch_size, optimizer=optimizer, lr=lr,
                                             images=args.images, threads=args.threads, results=results), indent=2))
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
