"""The default thread count is the CPUs the process may use, not the machine's; a capped request says so."""
import os

import pytest

import fastnn
from fastnn import backends, config, threads


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A fake machine: 8 cores, an affinity mask and cgroup files under tmp_path."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    proc = tmp_path / "proc_self_cgroup"
    write(proc, "0::/\n")
    return tmp_path / "cgroup", proc


def test_affinity_mask_counts_not_the_machine(monkeypatch, machine):
    root, _ = machine
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5, 6})  # taskset -c 2,5,6
    assert config.usable_cpus(root) == 3


@pytest.mark.parametrize("files,want", [
    ({"cpu.max": "150000 100000\n"}, 2),                   # docker --cpus=1.5: rounded up
    ({"cpu.max": "max 100000\n"}, 8),                      # no limit
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 8),      # v1, unlimited
    ({"cpu.max": "50000 100000\n"}, 1),                    # half a CPU: still one thread
    ({"cpu.max": "garbage\n"}, 8),                         # unreadable: ignored
])
def test_cgroup_quota_caps_the_default(monkeypatch, machine, files, want):
    root, _ = machine
    for name, text in files.items():
        write(root / name, text)
    assert config.usable_cpus(root) == want


def test_the_process_own_cgroup_and_its_parents_count(machine):
    root, proc = machine
    write(proc, "0::/user.slice/job\n")
    write(root / "user.slice" / "cpu.max", "200000 100000\n")   # the parent's limit: 2 CPUs
    write(root / "user.slice" / "job" / "cpu.max", "max 100000\n")
    assert config.cgroup_cpu_quota(root, proc) == 2.0


def test_default_thread_count_uses_usable_cpus(monkeypatch):
    monkeypatch.delenv("FASTNN_NUM_THREADS", raising=False)
    monkeypatch.setattr(config, "usable_cpus", lambda: 3)
    assert config.num_threads() == 3


def test_a_capped_request_says_so():
    backends.use("numba")
    most = threads.numba_thread_limit()
    previous = threads.current_threads()
    try:
        with pytest.warns(RuntimeWarning, match=rf"{most + 5} threads asked for, {most} used.*NUMBA_NUM_THREADS"):
            assert fastnn.set_threads(most + 5) == most
        assert threads.current_threads() == most
    finally:
        fastnn.set_threads(previous)
