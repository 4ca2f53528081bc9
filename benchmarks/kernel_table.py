"""README's kernel table from saved pytest-benchmark runs, one run per backend (benchmarks/conftest.py
says how to make them): the median time of every kernel on every backend, side by side.

    python benchmarks/kernel_table.py .benchmarks/kernels            # the newest run of each backend
    python benchmarks/kernel_table.py run1.json run2.json run3.json   # exactly these runs
    python benchmarks/kernel_table.py .benchmarks/kernels --stat min  # the fastest call instead

`pytest-benchmark compare --group-by=group` shows the same runs as terminal tables with every
statistic; this prints one markdown table (median microseconds, the fastest backend in bold) and
the machine facts and threads the runs were saved with. On a shared machine the minimum is the
steadier number (a call another process slowed down is never the fastest); the median is what a
training step meets.
"""
import argparse
import json
from pathlib import Path

from fastnn.config import BACKENDS


def newest_runs(paths):
    """{backend: saved run}, the newest run of each backend among the files and directories given."""
    files = [f for p in map(Path, paths) for f in (sorted(p.rglob("*.json")) if p.is_dir() else [p])]
    runs = {}
    for f in files:
        run = json.loads(f.read_text())
        facts = run.get("machine_info", {}).get("fastnn", {})
        backend = facts.get("backend") or f.stem.split("_", 1)[-1]
        if backend not in runs or run["datetime"] > runs[backend]["datetime"]:
            runs[backend] = run
    first = [name for name in BACKENDS if name in runs]  # the columns in the registry's order
    return {name: runs[name] for name in first + sorted(set(runs) - set(first))}


def number(microseconds):
    """3 significant figures or more: 1.23, 45.6, 789, 12,345."""
    return f"{microseconds:,.2f}" if microseconds < 10 else f"{microseconds:,.1f}" if microseconds < 100 else \
        f"{microseconds:,.0f}"


def markdown(runs, stat="median"):
    """The table, one row per kernel and shape, one column per backend."""
    names = list(runs)
    medians, order = {}, []
    for name, run in runs.items():
        for b in run["benchmarks"]:
            if b["group"] not in medians:
                order.append(b["group"])
                medians[b["group"]] = {}
            medians[b["group"]][name] = b["stats"][stat] * 1e6
    lines = ["| model | layer | kernel | " + " | ".join(names) + " |", "|---|---|---|" + "---:|" * len(names)]
    for group in order:
        times = medians[group]
        best = min(times.values())
        cells = [("-" if n not in times else f"**{number(times[n])}**" if times[n] == best else number(times[n]))
                 for n in names]
        lines.append("| " + " | ".join(group.split(" | ")) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="saved runs (.json) or directories holding them")
    p.add_argument("--stat", choices=("median", "min", "mean"), default="median",
                   help="the statistic of each kernel's calls (default median)")
    args = p.parse_args(argv)
    runs = newest_runs(args.paths)
    if not runs:
        raise SystemExit("no saved runs found: see benchmarks/conftest.py for the commands that save them")
    for name, run in runs.items():
        facts = run["machine_info"].get("fastnn", {})
        blas = ", ".join(f"{b['internal_api']} {b['architecture']} ({b['num_threads']} threads)"
                         for b in facts.get("blas", []) if b["user_api"] == "blas")
        print(f"{name}: saved {run['datetime'][:16]}, {facts.get('cpu')}, {facts.get('threads')} threads; BLAS {blas}")
    print(f"\n{args.stat} microseconds per call (the fastest backend in bold)\n")
    print(markdown(runs, args.stat))


if __name__ == "__main__":
    main()
