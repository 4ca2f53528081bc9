"""Data-parallel training on one machine, measured, and on N machines, estimated.

    python benchmarks/distributed_scaling.py --model all --repeats 3 --json out.json
    python benchmarks/distributed_scaling.py --model simple-cnn --batch-sizes 100,256

For each model and batch size, alternated ``--repeats`` times (A B A B ...), each a fresh
``fastnn train`` on the first ``--images`` real MNIST training images, one epoch:

* A: 1 process with 2 threads (the machine's cores used by threads);
* B: ``mpiexec -n 2 fastnn train --distributed`` with 1 thread per rank (used by ranks).

It prints the median training images/s of each (the epoch's, compiling excluded) and B/A, then
times the Allreduce alone: ``mpiexec -n 2`` runs this script with ``--allreduce FLOATS``, which
sums a buffer of the model's size (its parameters plus the loss) in place 200 times after a
barrier, and reports the median call. The trained runs' own "allreduce_seconds_per_step" (from
the metrics) is printed too: it also holds the wait for the slower rank.

The estimate for N machines (``--machines``) is on paper: a step of the global batch B takes
``compute(B) / N + allreduce(N)``, where compute(B) is run A's seconds per step (this machine,
both cores) and the ring Allreduce moves ``2 (N - 1) / N * parameters * 4`` bytes per machine at
the link's rate, plus 2 (N - 1) latencies (``--latency-us``). Speedup = compute(B) / that.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastnn.bench import MODEL_DEFAULTS

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
LINKS_GBIT = (10, 100)


def allreduce_worker(n_floats, calls=200):
    """Under mpiexec: the median seconds of one in-place Allreduce (sum) of ``n_floats`` float32."""
    import numpy as np
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    buffer = np.ones(n_floats, np.float32)
    times = []
    for _ in range(calls):
        comm.Barrier()
        start = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        times.append(time.perf_counter() - start)
    times = comm.gather(statistics.median(times), root=0)
    if comm.Get_rank() == 0:
        print(json.dumps({"floats": n_floats, "seconds": max(times)}))


def mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else "mpiexec"


def environment(threads):
    env = dict(os.environ, FASTNN_NUM_THREADS=str(threads))
    if "FASTNN_DATA" not in env and SHARED_MNIST.exists():
        env["FASTNN_DATA"] = str(SHARED_MNIST)
    return env


def train(model, batch_size, images, ranks, threads, workdir):
    """One epoch of ``fastnn train``; its metrics JSON."""
    metrics = Path(workdir) / f"{model}-{batch_size}-{ranks}.json"
    command = [sys.executable, "-m", "fastnn", "train", "--model", model, "--batch-size", str(batch_size),
               "--limit", str(images), "--epochs", "1", "--threads", str(threads), "--no-progress",
               "--metrics", str(metrics)]
    if ranks > 1:
        command = [mpiexec(), "-n", str(ranks), *command, "--distributed"]
    subprocess.run(command, check=True, capture_output=True, text=True, env=environment(threads))
    return json.loads(metrics.read_text())


def allreduce_seconds(n_floats):
    out = subprocess.run([mpiexec(), "-n", "2", sys.executable, __file__, "--allreduce", str(n_floats)],
                         check=True, capture_output=True, text=True, env=environment(1))
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def ring_seconds(parameters, machines, gbit, latency):
    """A ring Allreduce of float32 ``parameters`` over ``machines``: bandwidth and latency terms."""
    if machines == 1:
        return 0.0
    moved = 2 * (machines - 1) / machines * parameters * 4
    return moved * 8 / (gbit * 1e9) + 2 * (machines - 1) * latency


def measure(models, batch_sizes, images, repeats, workdir):
    rows = []
    for model in models:
        for batch in batch_sizes or [MODEL_DEFAULTS[model][0]]:
            runs = {"1x2": [], "2x1": []}
            for _ in range(repeats):
                for key, (ranks, threads) in (("1x2", (1, 2)), ("2x1", (2, 1))):
                    runs[key].append(train(model, batch, images, ranks, threads, workdir))
            a = [m["epochs"][-1]["images_per_second"] for m in runs["1x2"]]
            b = [m["epochs"][-1]["images_per_second"] for m in runs["2x1"]]
            floats = runs["2x1"][0]["allreduce_floats"]
            row = {"model": model, "batch_size": batch, "parameters": floats - 1,
                   "images_per_second_1x2": statistics.median(a), "images_per_second_2x1": statistics.median(b),
                   "runs_1x2": a, "runs_2x1": b,
                   "allreduce_seconds": allreduce_seconds(floats),
                   "allreduce_and_wait_seconds": statistics.median(m["allreduce_seconds_per_step"]
                                                                   for m in runs["2x1"])}
            row["ratio"] = row["images_per_second_2x1"] / row["images_per_second_1x2"]
            row["step_seconds_1x2"] = batch / row["images_per_second_1x2"]
            rows.append(row)
            print(f"{model:12s} batch {batch:3d}  1 rank x 2 threads {row['images_per_second_1x2']:8,.0f}  "
                  f"2 ranks x 1 thread {row['images_per_second_2x1']:8,.0f} images/s  ({row['ratio']:.2f}x)  "
                  f"Allreduce {1e3 * row['allreduce_seconds']:.3f} ms of a {1e3 * row['step_seconds_1x2']:.2f} ms "
                  f"step (with waiting {1e3 * row['allreduce_and_wait_seconds']:.3f} ms)", flush=True)
    return rows


def estimate(rows, machines, latency):
    print(f"\nestimated speedup on N machines like this one (fixed global batch; ring Allreduce, "
          f"{latency * 1e6:g} us per hop):")
    header = " | ".join(f"N={n} {g} Gb/s" for g in LINKS_GBIT for n in machines)
    print(f"| model (batch) | step ms | Allreduce MB | {header} |")
    for row in rows:
        step = row["step_seconds_1x2"]
        cells = []
        for gbit in LINKS_GBIT:
            for n in machines:
                speedup = step / (step / n + ring_seconds(row["parameters"], n, gbit, latency))
                cells.append(f"{speedup:.1f}x")
                row.setdefault("estimate", {})[f"{n}@{gbit}"] = speedup
        print(f"| {row['model']} ({row['batch_size']}) | {1e3 * step:.2f} | {row['parameters'] * 4 / 1e6:.2f} | "
              + " | ".join(cells) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="all", help="a named model or all")
    p.add_argument("--batch-sizes", help="comma-separated (default: each model's usual batch)")
    p.add_argument("--images", type=int, default=6000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--machines", default="2,4,8,16")
    p.add_argument("--latency-us", type=float, default=20.0, help="per ring hop, for the estimate")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--allreduce", type=int, metavar="FLOATS", help=argparse.SUPPRESS)  # the mpiexec worker
    args = p.parse_args()
    if args.allreduce:
        return allreduce_worker(args.allreduce)
    models = list(MODEL_DEFAULTS) if args.model == "all" else [args.model]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else None
    with tempfile.TemporaryDirectory() as workdir:
        rows = measure(models, batch_sizes, args.images, args.repeats, workdir)
    estimate(rows, [int(n) for n in args.machines.split(",")], args.latency_us * 1e-6)
    if args.json:
        Path(args.json).write_text(json.dumps({"images": args.images, "repeats": args.repeats, "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()
