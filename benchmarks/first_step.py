"""Seconds from launching `fastnn train` to its first training step, per named model, as a newcomer
meets it: a fresh process, and a fresh user cache (no tuning cache) unless --keep-cache.

    python benchmarks/first_step.py                                # every model, default backend, 2 threads
    FASTNN_BACKEND=numba NUMBA_CACHE_DIR=$(mktemp -d) python benchmarks/first_step.py --model mlp

The clock stops when `fastnn train` prints its "compiling / warming up" line: the warm-up is one
training step (compiling whatever the backend compiles), and the first real step follows at once.
The epoch line after it shows the images/s that first epoch trained at (images from --limit).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from fastnn.models import MODELS


def first_step(model, threads, limit, keep_cache):
    env = dict(os.environ)
    if not keep_cache:
        env["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="fastnn-first-step-")
    start = time.perf_counter()
    command = [sys.executable, "-m", "fastnn", "train", "--model", model, "--epochs", "1", "--limit", str(limit),
               "--threads", str(threads), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    seconds, warmup, epoch = None, "", ""
    for line in process.stdout:
        if line.startswith("compiling") and seconds is None:
            seconds, warmup = time.perf_counter() - start, line.strip()
        elif line.startswith("epoch"):
            epoch = line.strip()
    if process.wait() != 0 or seconds is None:
        sys.exit(f"{' '.join(command)} failed (exit {process.returncode})")
    return seconds, warmup, epoch


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("all", *MODELS), default="all")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=3000, help="training images of the one epoch (default 3000)")
    p.add_argument("--keep-cache", action="store_true", help="use the user cache as it is (a second run)")
    args = p.parse_args()
    for model in MODELS if args.model == "all" else (args.model,):
        seconds, warmup, epoch = first_step(model, args.threads, args.limit, args.keep_cache)
        print(f"{model:12s} launch -> first step {seconds:5.1f} s | {warmup} | {epoch}", flush=True)


if __name__ == "__main__":
    main()
