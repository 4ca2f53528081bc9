"""Wall-clock time to 99% MNIST test accuracy: fastnn's speedrun recipe against PyTorch, in one run.

    python benchmarks/time_to_accuracy.py                       # 3 contestants x seeds 0 1 2, 2 threads
    python benchmarks/time_to_accuracy.py --runs fastnn torch-published --seeds 0 1 2 3 4 --json out.json
    python benchmarks/time_to_accuracy.py --runs fastnn --seeds 0 --limit 512     # a short smoke run

The contestants:

fastnn
    ``python -m fastnn train --recipe speedrun --seed S --threads N --target-accuracy T --no-progress
    --metrics PATH`` in a subprocess (fastnn/recipes.py: speedrun-net, batch 256, Adam lr 0.01 betas
    (0.7, 0.9), one-cycle with a 47-step rise, one epoch; the cython backend where it loads). The
    numbers are read from its metrics JSON: train seconds are ``train_seconds_total`` (the training
    steps, from the first step to the epoch's end: the per-batch gathers included, loading the data
    and the warm-up step in which Numba compiles or loads its kernels, ``compile_seconds``, left out),
    eval seconds are the rest of the run's clock (``run_seconds - train_seconds_total``: evaluating
    the 10,000 test images), seconds to target its ``seconds_to_target`` (train + eval at the first
    evaluation that reached the target; None when none did), accuracy the last epoch's test accuracy.
torch-published
    The published one-epoch PyTorch recipe, in PyTorch: conv 1->24 5x5 -> max-pool 2 -> ReLU -> conv
    24->32 3x3 -> max-pool 2 -> ReLU -> flatten -> dense 800->256 -> ReLU -> dense 256->10 (PyTorch's
    default initialisation, torch.manual_seed(S)); batch 256 shuffled every epoch, the last partial
    batch kept; Adam lr 0.01 betas (0.7, 0.9); OneCycleLR(max_lr=0.01, total_steps=steps,
    cycle_momentum=False) stepped every batch; cross-entropy; one epoch.
torch-fastnn-recipe
    fastnn's recipe in PyTorch: the same loop, with the settings of fastnn.recipes.RECIPES["speedrun"]
    (batch, epochs, lr, betas, weight decay, label smoothing) and its model read off fastnn's layer by
    layer (fastnn.bench.torch_twin). fastnn's one-cycle with a warm-up of W steps rises over steps
    0..W-1, as OneCycleLR does with pct_start = W / total_steps (fastnn/schedules.py), so that is the
    pct_start used (W = 47 of 235 steps: 0.2).

In both PyTorch contestants the whole data set is resident in memory as float32 tensors, loaded with
fastnn's own loader (fastnn.data.load_mnist: pixel / 255, shape (N, 1, 28, 28)), so every contestant
sees identical data; torch.set_num_threads(--threads). Train seconds run from the first training step
to the end of the last epoch (loading the data and building the model left out; PyTorch's first step,
with its one-off allocations, is included and also reported apart as ``first_step_seconds``); then
the 10,000 test images are evaluated (model.eval(), no gradients, batches of 1,000 as fastnn's
Trainer does), timed apart as eval seconds. seconds_to_target = train + eval when the accuracy
reaches --target, else None.

Every run is a fresh process with the same threads (FASTNN_NUM_THREADS, OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, NUMBA_NUM_THREADS = --threads; OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset together, so OpenBLAS picks its kernels for this CPU as in README's
measurements). The machine is shared and noisy, so the contestants alternate: seed 0: a, b, c;
seed 1: a, b, c; ... Medians are over the seeds; a run that misses the target counts as never
reaching it (infinitely slow) in the median seconds to target, which is None when half or more
missed. The ratio fastnn / torch-published is a ratio of medians.

PyTorch is for comparison only, never a fastnn dependency (pip install torch==2.13.0, the CPU build).

JSON (``--json``): {target, threads, seeds, limit, order, environment, contestants: {name: {runs:
[{seed, accuracy, train_seconds, eval_seconds, seconds_to_target, ...} or {seed, error}],
median_train_seconds, median_eval_seconds, median_seconds_to_target, median_accuracy, reached,
failed_runs}}, ratio_fastnn_to_torch_published_train_seconds, ratios: {"fastnn/<torch contestant>":
{train_seconds, seconds_to_target}}}.
"""
import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONTESTANTS = ("fastnn", "torch-published", "torch-fastnn-recipe")
TORCH_CONTESTANTS = CONTESTANTS[1:]
RECIPE = "speedrun"
REPO = Path(__file__).resolve().parents[1]
# set by hand for some machines; a benchmark lets OpenBLAS detect the CPU, so both go together
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
EVAL_BATCH = 1000  # fastnn's Trainer evaluates in batches of 1,000 too
TORCH_HINT = "pip install torch==2.13.0"


def benchmark_env(threads):
    """The environment of every contestant's process: the same threads everywhere, no OpenBLAS override."""
    env = dict(os.environ)
    for name in OPENBLAS_OVERRIDES:
        env.pop(name, None)
    n = str(threads)
    env.update(FASTNN_NUM_THREADS=n, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n,
               NUMBA_NUM_THREADS=n)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ------------------------------------------------------------------------ PyTorch, in its own process

def published_net():
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(1, 24, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(24, 32, 3), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 5 * 5, 256), nn.ReLU(), nn.Linear(256, 10))


def torch_settings(name, n_train):
    """(model builder, settings) of a PyTorch contestant; settings name everything the loop uses."""
    steps_per_epoch = -(-n_train // 256)
    if name == "torch-published":
        return published_net, dict(batch_size=256, epochs=1, lr=0.01, betas=[0.7, 0.9], weight_decay=0.0,
                                   label_smoothing=0.0, pct_start=0.3, total_steps=steps_per_epoch)
    from fastnn import models
    from fastnn.recipes import RECIPES
    recipe = RECIPES[RECIPE]
    if recipe.get("optimizer", "adam") != "adam" or recipe.get("schedule") != "onecycle":
        raise SystemExit(f"torch-fastnn-recipe: only an Adam + one-cycle recipe has a PyTorch twin here, and "
                         f"{RECIPE} is {recipe.get('optimizer')} + {recipe.get('schedule')}")
    batch_size, epochs = recipe.get("batch_size", 100), recipe.get("epochs", 1)
    total_steps = -(-n_train // batch_size) * epochs
    warmup = recipe.get("warmup")
    # fastnn's onecycle with warmup W rises over steps 0..W-1; OneCycleLR over 0..pct_start*T-1
    pct_start = min(warmup / total_steps, 1.0) if warmup else 0.3
    settings = dict(batch_size=batch_size, epochs=epochs, lr=recipe["lr"], betas=list(recipe.get("betas", [0.9, 0.999])),
                    weight_decay=recipe.get("weight_decay", 0.0), label_smoothing=recipe.get("label_smoothing", 0.0),
                    pct_start=pct_start, total_steps=total_steps, warmup=warmup, model=recipe["model"])
    ignored = [k for k in ("augment", "cycle_momentum", "eps") if recipe.get(k)]
    if ignored:
        settings["ignored_recipe_settings"] = ignored  # no twin in this loop: said in the results
    from fastnn.bench import torch_twin as twin
    return (lambda: twin(models.build(recipe["model"]))), settings


def measure_torch(name, seed, threads, limit, data, target):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from fastnn.data import load_mnist

    torch.set_num_threads(threads)
    x_train, y_train, x_test, y_test = load_mnist("mnist", data, download_missing=False, progress=False)
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    x_train, y_train = torch.from_numpy(np.ascontiguousarray(x_train)), torch.from_numpy(y_train)
    x_test, y_test = torch.from_numpy(np.ascontiguousarray(x_test)), torch.from_numpy(y_test)
    n = len(x_train)
    build, s = torch_settings(name, n)
    torch.manual_seed(seed)
    model = build()
    shuffle = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"], betas=tuple(s["betas"]), weight_decay=s["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s["lr"], total_steps=s["total_steps"],
                                                pct_start=s["pct_start"], cycle_momentum=False)
    bs, steps, first_step, train_seconds = s["batch_size"], 0, None, 0.0
    model.train()
    for _ in range(s["epochs"]):
        order = torch.randperm(n, generator=shuffle)
        start = time.perf_counter()
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx], label_smoothing=s["label_smoothing"])
            loss.backward()
            opt.step()
            steps += 1
            if steps < s["total_steps"]:  # no rate after the last step (OneCycleLR refuses one past the end)
                sched.step()
            if first_step is None:
                first_step = time.perf_counter() - start
        train_seconds += time.perf_counter() - start
    final_loss = loss.item()
    start = time.perf_counter()
    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.inference_mode():
        for i in range(0, len(x_test), EVAL_BATCH):
            logits = model(x_test[i:i + EVAL_BATCH])
            loss_sum += F.cross_entropy(logits, y_test[i:i + EVAL_BATCH], reduction="sum").item()
            correct += (logits.argmax(1) == y_test[i:i + EVAL_BATCH]).sum().item()
    eval_seconds = time.perf_counter() - start
    accuracy = correct / len(x_test)
    return dict(accuracy=accuracy, test_loss=loss_sum / len(x_test), train_loss_last_batch=final_loss,
                train_seconds=train_seconds, eval_seconds=eval_seconds,
                seconds_to_target=train_seconds + eval_seconds if accuracy >= target else None,
                first_step_seconds=first_step, steps=steps, train_images=n, threads=torch.get_num_threads(),
                torch=torch.__version__, settings=s)


# ------------------------------------------------------------------------ the parent

def run_torch(name, seed, args):
    cmd = [sys.executable, __file__, "--worker", name, "--seeds", str(seed), "--threads", str(args.threads),
           "--target", repr(args.target)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.data:
        cmd += ["--data", str(args.data)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=benchmark_env(args.threads), capture_output=True, text=True)
    process_seconds = time.perf_counter() - start
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]), process_seconds=process_seconds)
    tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def run_fastnn(seed, args):
    """One ``fastnn train --recipe speedrun`` process; its numbers from the metrics JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics_path = Path(tmp) / "metrics.json"
        cmd = [sys.executable, "-m", "fastnn", "train", "--recipe", RECIPE, "--seed", str(seed), "--no-progress",
               "--threads", str(args.threads), "--target-accuracy", repr(args.target), "--metrics", str(metrics_path)]
        for flag in ("limit", "data", "backend"):
            if getattr(args, flag):
                cmd += [f"--{flag}", str(getattr(args, flag))]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=benchmark_env(args.threads), capture_output=True, text=True, cwd=REPO)
        process_seconds = time.perf_counter() - start
        if proc.returncode != 0 or not metrics_path.exists():
            tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no output)"])[-1]
            return {"error": f"exit {proc.returncode}: {tail}"}
        m = json.loads(metrics_path.read_text())
    epochs = m.get("epochs") or []
    if not epochs:
        return {"error": "the metrics JSON has no epochs"}
    last = epochs[-1]
    accuracy = last.get("test_accuracy")
    train = m.get("train_seconds_total", sum(e.get("train_seconds", 0.0) for e in epochs))
    run_seconds = m.get("run_seconds")
    eval_seconds = run_seconds - train if run_seconds is not None else None
    if "seconds_to_target" in m:
        to_target = m["seconds_to_target"]
    else:  # an older CLI: train + eval when the final accuracy made it
        to_target = train + (eval_seconds or 0.0) if accuracy is not None and accuracy >= args.target else None
    missing = [k for k in ("train_seconds_total", "run_seconds", "seconds_to_target", "compile_seconds")
               if k not in m]
    result = dict(accuracy=accuracy, test_loss=last.get("test_loss"), train_seconds=train, eval_seconds=eval_seconds,
                  seconds_to_target=to_target, compile_seconds=m.get("compile_seconds"), backend=m.get("backend"),
                  threads=m.get("threads"), model=m.get("model"), batch_size=m.get("batch_size"),
                  evaluations=m.get("evaluations"), schedule=m.get("schedule"),
                  optimizer_settings=m.get("optimizer_settings"), train_images=None,
                  process_seconds=process_seconds)
    if last.get("images_per_second"):
        result["train_images"] = round(last["images_per_second"] * last["train_seconds"])
    if missing:
        result["missing_metrics"] = missing
    return result


def summarise(runs, target):
    ok = [r for r in runs if "error" not in r]
    summary = dict(runs=runs, failed_runs=len(runs) - len(ok))
    if not ok:
        return summary

    def to_target(r):
        return math.inf if r["seconds_to_target"] is None else r["seconds_to_target"]
    median_to_target = statistics.median(to_target(r) for r in ok)  # a miss is never
    summary.update(median_train_seconds=statistics.median(r["train_seconds"] for r in ok),
                   median_eval_seconds=median_or_none(r["eval_seconds"] for r in ok),
                   median_seconds_to_target=None if math.isinf(median_to_target) else median_to_target,
                   median_accuracy=statistics.median(r["accuracy"] for r in ok),
                   reached=f"{sum(r['seconds_to_target'] is not None for r in ok)}/{len(ok)}")
    return summary


def cell(value, fmt, width):
    return f"{'-':>{width}s}" if value is None else f"{value:{width}{fmt}}"


def print_table(results, seeds, target):
    print(f"\n{'contestant':20s} {'seed':>5s} {'accuracy':>9s} {'train s':>8s} {'eval s':>7s} "
          f"{'to ' + format(100 * target, 'g') + '% s':>10s} {'compile s':>10s}")
    for name, summary in results.items():
        for run in summary["runs"]:
            if "error" in run:
                print(f"{name:20s} {run['seed']:5d}  {run['error']}")
                continue
            acc = f"{100 * run['accuracy']:8.2f}%"
            print(f"{name:20s} {run['seed']:5d} {acc:>9s} {cell(run['train_seconds'], '.2f', 8)} "
                  f"{cell(run['eval_seconds'], '.2f', 7)} {cell(run['seconds_to_target'], '.2f', 10)} "
                  f"{cell(run.get('compile_seconds'), '.2f', 10)}")
    print(f"\nmedians over seeds {' '.join(map(str, seeds))} (a miss of the target counts as never):")
    print(f"{'contestant':20s} {'accuracy':>9s} {'train s':>8s} {'eval s':>7s} {'to target s':>12s} {'reached':>8s}")
    for name, s in results.items():
        if "median_train_seconds" not in s:
            print(f"{name:20s} every run failed")
            continue
        acc = f"{100 * s['median_accuracy']:8.2f}%"
        print(f"{name:20s} {acc:>9s} {s['median_train_seconds']:8.2f} {cell(s['median_eval_seconds'], '.2f', 7)} "
              f"{cell(s['median_seconds_to_target'], '.2f', 12)} {s['reached']:>8s}")


def ratios(results):
    """fastnn / each PyTorch contestant, of the median train seconds and median seconds to target."""
    out = {}
    a = results.get("fastnn", {})
    for name in TORCH_CONTESTANTS:
        b = results.get(name, {})
        if "median_train_seconds" not in a or "median_train_seconds" not in b:
            continue
        to_target = (a["median_seconds_to_target"] / b["median_seconds_to_target"]
                     if a["median_seconds_to_target"] and b["median_seconds_to_target"] else None)
        out[f"fastnn/{name}"] = dict(train_seconds=a["median_train_seconds"] / b["median_train_seconds"],
                                     seconds_to_target=to_target)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", choices=CONTESTANTS, default=list(CONTESTANTS),
                   help="the contestants (default: all three)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds, each run by every contestant "
                   "in turn (default 0 1 2)")
    p.add_argument("--threads", type=int, default=2, help="threads of every contestant (default 2)")
    p.add_argument("--target", type=float, default=0.99, help="the test accuracy to reach (default 0.99)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="train on the first N training images only (fastnn train --limit; for short test runs)")
    p.add_argument("--data", type=Path, default=None, help="the MNIST directory (default: $FASTNN_DATA, ...)")
    p.add_argument("--backend", default=None, help="fastnn's backend (default: the recipe's, where it loads)")
    p.add_argument("--json", type=Path, default=None, help="write every result here")
    p.add_argument("--worker", choices=TORCH_CONTESTANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1 or (args.limit is not None and args.limit < 1) or not 0 < args.target <= 1:
        p.error("--threads and --limit must be 1 or more, --target in (0, 1]")
    if args.worker:
        result = measure_torch(args.worker, args.seeds[0], args.threads, args.limit, args.data, args.target)
        print("RESULT " + json.dumps(result))
        return result

    names = list(dict.fromkeys(args.runs))
    torch_version = None
    if any(n in TORCH_CONTESTANTS for n in names):
        if importlib.util.find_spec("torch") is None:
            raise SystemExit(f"torch is not importable: {', '.join(n for n in names if n in TORCH_CONTESTANTS)} "
                             f"need it ({TORCH_HINT}, the CPU build), or leave them out with --runs fastnn")
        from importlib.metadata import version
        torch_version = version("torch")
    print(f"time to {100 * args.target:g}% MNIST test accuracy: {', '.join(names)}; seeds "
          f"{' '.join(map(str, args.seeds))}, alternated; {args.threads} threads; each run in a fresh process"
          + (f"; first {args.limit} training images only" if args.limit else ""), flush=True)
    runs = {name: [] for name in names}
    order = []
    for seed in args.seeds:
        for name in names:  # a, b, c, a, b, c: a slow spell of the machine hits every contestant
            r = run_fastnn(seed, args) if name == "fastnn" else run_torch(name, seed, args)
            r = dict(seed=seed, **r)
            runs[name].append(r)
            order.append([name, seed])
            shown = r["error"] if "error" in r else (
                f"accuracy {100 * r['accuracy']:.2f}%  train {r['train_seconds']:.2f} s  eval "
                f"{cell(r['eval_seconds'], '.2f', 0)} s  to target {cell(r['seconds_to_target'], '.2f', 0)} s")
            print(f"  seed {seed}  {name:20s} {shown}", flush=True)
    results = {name: summarise(runs[name], args.target) for name in names}
    print_table(results, args.seeds, args.target)
    rel = ratios(results)
    for key, r in rel.items():
        to = f", seconds to target {r['seconds_to_target']:.2f}x" if r["seconds_to_target"] else ""
        print(f"{key}: median train seconds {r['train_seconds']:.2f}x{to}")
    report = dict(target=args.target, threads=args.threads, seeds=args.seeds, limit=args.limit, order=order,
                  environment=dict(python=platform.python_version(), machine=platform.machine(),
                                   cpu_count=os.cpu_count(), torch=torch_version,
                                   unset=[v for v in OPENBLAS_OVERRIDES if v in os.environ]),
                  contestants=results,
                  ratio_fastnn_to_torch_published_train_seconds=rel.get("fastnn/torch-published", {}).get(
                      "train_seconds"),
                  ratios=rel)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
