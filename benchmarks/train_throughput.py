"""Training throughput (images/s) of fastnn's backends next to PyTorch on the same architecture.

    python benchmarks/train_throughput.py --model simple-cnn --backends numpy,numba,cython \
        --images 6000 --threads 2 --repeats 3 --json out.json --plot out.png
    python benchmarks/train_throughput.py --model all --images 3000 --threads 2
    python benchmarks/train_throughput.py --model deep-cnn --backends numba --profile   # per-layer table

The same measurement as ``fastnn bench``, with the same flags and defaults: both call
fastnn/bench.py, whose docstring says how it measures (every backend and PyTorch in its own fresh
process with the same threads, warm-up timed apart as compile seconds, runs alternated, median and
min-max). Real MNIST batches come from --data or FASTNN_DATA (random images otherwise).
"""
import argparse
import sys

from fastnn import bench
from fastnn.errors import FastnnError


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(p)
    args = p.parse_args(argv)
    try:
        report = bench.run_from_args(args)
    except FastnnError as e:
        sys.exit(f"train_throughput.py: error: {e}")
    failed = bench.failures(report)
    if failed:
        sys.exit(f"train_throughput.py: error: {len(failed)} measurement(s) failed: {'; '.join(failed)}")
    return report


if __name__ == "__main__":
    main()
