"""Data-parallel training over MPI (fastnn/distributed.py), with ``mpiexec -n 2`` on this machine.

* One step, exact: the 2 ranks' gradient is one process's gradients of their two slices, weighted
  by the slices' shares and added: to the last bit (a 2-term float32 sum is the same in any order).
  BatchNorm's running statistics are the average of each slice's, to the last bit.
* One step, rounding: that gradient is one process's gradient of the whole batch, and the SGD update
  its update, to float32 rounding, with a bound from the sizes of the sums (float32's unit roundoff
  times sqrt(terms) times the sum of the terms' absolute values).
* An epoch: 2 ranks end as close to one process as 10 times the noise that rounding alone makes
  (measured in the same run: one process that adds each batch's images in reverse order), and
  training moved every tensor 100 times farther than that.
* One run: rank 0 alone prints and writes; the metrics say "world_size".
* Resume: a run whose rank 1 is SIGKILLed resumes on 2 ranks to the parameters of an unbroken
  run, bit for bit; on another number of ranks it is refused.
* Failure: a rank that fails alone (a corrupt data file) or hangs (SIGSTOP) stops both ranks with
  its message, in bounded time; a NaN loss on one rank stops both at the same step, before its
  update, reported once.

mpi4py and mpiexec come with ``pip install "fastnn[mpi]"`` (dev includes it); where they are
missing these tests are skipped with that reason, and under CI they fail instead.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastnn import models
from fastnn.distributed import DataParallel, split
from fastnn.errors import ConfigError

from .conftest import IN_CI
from .distributed_worker import STEP_LR

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
TIMEOUT = 180  # seconds any one command may take here before the test calls it a hang


@pytest.fixture
def mpiexec():
    try:
        import mpi4py  # noqa: F401
        reason = None if MPIEXEC else "no mpiexec on PATH"
    except ImportError:
        reason = "mpi4py is not installed"
    if reason:
        message = f"{reason}: pip install \"fastnn[mpi]\""
        if IN_CI:
            pytest.fail(f"the MPI tests must run in CI: {message}")
        pytest.skip(message)
    return MPIEXEC


def run(command, tmp_path, mnist_dir, **env):
    """Run ``command`` in tmp_path with one thread per process; (completed process, seconds)."""
    environment = dict(os.environ, PYTHONPATH=str(ROOT), FASTNN_DATA=str(mnist_dir), FASTNN_NUM_THREADS="1")
    for name in ("FASTNN_TEST_KILL", "FASTNN_MPI_TIMEOUT", "FASTNN_CONV_ALGO"):
        environment.pop(name, None)
    environment.update(env)
    start = time.perf_counter()
    done = subprocess.run([str(c) for c in command], check=False, cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=TIMEOUT)
    return done, time.perf_counter() - start


def ranks(mpiexec, n=2):
    return [mpiexec, "-n", n]


def fastnn_cli(*args):
    return [sys.executable, "-m", "fastnn", *args]


def arrays(path, prefix="param/"):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if k.startswith(prefix)}


def part(data, prefix):
    """The arrays of ``data`` (an .npz file or a dict) whose names start with ``prefix``, named without it."""
    return {k[len(prefix):]: data[k] for k in data.keys() if k.startswith(prefix)}


def assert_same_bits(actual, expected, name):
    assert np.array_equal(actual, expected), \
        f"{name}: off by up to {np.abs(actual - expected).max():.3g}, in values up to {np.abs(expected).max():.3g}"


def relative_differences(a, b):
    """Per parameter tensor: |a - b| / |b| (Frobenius norms)."""
    assert a.keys() == b.keys() and a
    return {k: float(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(b[k])) for k in a}


# ---------------------------------------------------------------- exactness

STEP_IMAGES = {"mlp": 25, "simple-cnn": 100, "pytorch-net": 100}  # mlp's 25 split unevenly: 13 and 12
U = float(np.finfo(np.float32).eps) / 2  # float32's unit roundoff: one rounding moves x by u|x| at most
_one_step = {}  # the one_step fixture's arrays, once read


@pytest.fixture
def one_step(mpiexec, mnist_dir, tmp_path_factory):
    """The worker's one SGD step of every model (and bn-mlp), on 2 ranks and in one process: one
    mpiexec run, made by the first test that asks and read by the others."""
    if not _one_step:
        directory = tmp_path_factory.mktemp("one-step")
        specs = [f"{model}:{images}" for model, images in STEP_IMAGES.items()] + ["bn-mlp:100"]
        # im2col: see the Winograd note at test_an_epoch_on_two_ranks_stays_within_the_rounding_noise_of_one_process
        done, _ = run([*ranks(mpiexec), sys.executable, WORKER, "step", "step.npz", *specs], directory, mnist_dir,
                      FASTNN_CONV_ALGO="im2col")
        assert done.returncode == 0, done.stderr
        with np.load(directory / "step.npz") as data:
            _one_step.update((k, data[k]) for k in data.files)
    return _one_step


@pytest.mark.parametrize("model", list(STEP_IMAGES))
def test_one_step_on_two_ranks_is_the_step_of_one_process_to_float32_rounding(one_step, model):
    n = STEP_IMAGES[model]
    assert one_step[f"{model}/in_sync"], "the ranks ended the step with different parameters"
    grads = {run: part(one_step, f"{model}/{run}/grad/") for run in ("two", "one", "slice0", "slice1")}
    shares = [(s.stop - s.start) / n for s in (split(n, 2, 0), split(n, 2, 1))]
    for key, two in grads["two"].items():
        # exact: each rank computes what one process computes on its slice (the same kernels on the
        # same numbers: the same bits); the Allreduce weighs the two by their shares of the batch and
        # adds them, one float32 addition, the same in either order
        weighted = [np.multiply(grads[f"slice{r}"][key], shares[r], dtype=np.float32) for r in (0, 1)]
        assert_same_bits(two, weighted[0] + weighted[1], key)
        # rounding: one process adds the same per-image terms in another order (not two halves, then
        # their sum). A float32 sum with n additions behind it, in any order, is within about
        # sqrt(n) u sum|terms| of the exact sum (Higham and Mary 2019, rounding errors independent and
        # of mean 0; the worst case, n u, is never met): the runs are within 2 sqrt(n) u ||A|| of each
        # other, A = sum|terms|. The worker's summed_terms gives A and n.
        one, a, n_added = grads["one"][key], one_step[f"{model}/abs/{key}"], one_step[f"{model}/terms/{key}"]
        bound = 2 * np.sqrt(n_added) * U * np.linalg.norm(a)
        assert np.linalg.norm(two - one) <= bound, (key, np.linalg.norm(two - one) / bound)
        # and the bound is far below the gradient, so that a wrong share or a lost term cannot hide in it
        assert bound < 0.01 * np.linalg.norm(one), key
    # the update, p - lr g: the runs' differ by lr times their gradients' difference, plus in each run
    # one rounding of lr g (u |lr g| at most) and one of the result z (u |z| <= u/(1 - u) |fl(z)|)
    lr = float(np.float32(STEP_LR))
    params = {run: part(one_step, f"{model}/{run}/param/") for run in ("two", "one")}
    for key, two in params["two"].items():
        two, one = two.astype(np.float64), params["one"][key].astype(np.float64)
        g2, g1 = grads["two"][key].astype(np.float64), grads["one"][key].astype(np.float64)
        rounding = U * lr * (np.abs(g2) + np.abs(g1)) + U / (1 - U) * (np.abs(two) + np.abs(one))
        assert np.all(np.abs(two - one) <= lr * np.abs(g2 - g1) + rounding), key


def test_batchnorm_running_statistics_are_averaged_over_the_ranks(one_step):
    assert one_step["bn-mlp/in_sync"], "the ranks ended with different parameters or running statistics"
    two = part(one_step, "bn-mlp/two/buffer/")
    slices = [part(one_step, f"bn-mlp/slice{r}/buffer/") for r in (0, 1)]
    assert two.keys() == {"2.running_mean", "2.running_var"}
    for key, statistics in two.items():
        # each rank's are those of one process's step on its slice alone; the Allreduce halves them
        # (exactly) and adds them (one float32 addition): their average, to the last bit
        assert_same_bits(statistics, np.float32(0.5) * slices[0][key] + np.float32(0.5) * slices[1][key], key)
        # the slices' differ, far beyond rounding: rank 0's statistics sent to every rank would not pass
        assert np.abs(slices[0][key] - slices[1][key]).max() > 1e-3 * np.abs(statistics).max(), key


@pytest.mark.slow
@pytest.mark.parametrize("model, images, conv_algorithm", [
    ("simple-cnn", 6000, "auto"),
    # Winograd (the default for pytorch-net's 32->64 conv) turns the exact zeros of the images'
    # background into +-1e-9, so the ReLU after it passes or stops a gradient on the sign of a
    # rounding error: any change of summation order, a second rank's included, then grows into
    # differences of about 1% in an epoch. im2col keeps those zeros exact.
    ("pytorch-net", 6000, "im2col"),
    ("mlp", 2025, "auto"),  # the last batch, 25 images, splits unevenly: 13 and 12
])
def test_an_epoch_on_two_ranks_stays_within_the_rounding_noise_of_one_process(mpiexec, tmp_path, mnist_dir, model,
                                                                              images, conv_algorithm):
    done, _ = run([*ranks(mpiexec), sys.executable, WORKER, "epoch", "epoch.npz", model, images], tmp_path, mnist_dir,
                  FASTNN_CONV_ALGO=conv_algorithm)
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "epoch.npz") as data:
        assert data["in_sync"], "the ranks ended with different parameters"
        two, one, reordered = (part(data, f"{run}/param/") for run in ("two", "one", "reversed"))
    # An epoch grows the rounding of its first steps (Adam divides by the gradients' running size)
    # by an amount that depends on the machine's kernels. The floor, measured here: how far one
    # process moves from itself when only the order and grouping of each batch's sums change
    # (reversed images, 2 threads: see distributed_worker.py). The largest
    # per-tensor difference against the floor's largest: each tensor's is one draw of that growth,
    # and they scatter by a few times.
    noise, apart = relative_differences(reordered, one), relative_differences(two, one)
    assert max(apart.values()) <= 10 * max(noise.values()), (apart, noise)
    # training moved every tensor a hundred times farther than the two runs are apart
    initial = part(models.build(model, seed=0).state_arrays(), "param/")
    assert all(np.linalg.norm(one[k] - initial[k]) > 100 * np.linalg.norm(two[k] - one[k]) for k in one)


# ---------------------------------------------------------------- the command line: one run, resume

RUN = ["train", "--distributed", "--model", "pytorch-net", "--limit", "1200", "--batch-size", "100",
       "--epochs", "2", "--seed", "5", "--no-progress"]


@pytest.mark.slow
def test_a_two_rank_run_is_one_run_and_resumes_exactly_after_a_rank_is_killed(mpiexec, tmp_path, mnist_dir):
    # unbroken (pytorch-net keeps its dropout: each rank's stream must be restored on resume)
    whole, _ = run([*ranks(mpiexec), *fastnn_cli(*RUN, "--checkpoint", "a.ck.npz", "--checkpoint-every", "5",
                                                "--metrics", "a.json", "--save", "a.npz")], tmp_path, mnist_dir)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.count("epoch 1/2") == 1 and whole.stdout.count("compiling") == 1, whole.stdout
    assert "2 ranks" in whole.stdout
    metrics = json.loads((tmp_path / "a.json").read_text())
    assert metrics["world_size"] == 2 and len(metrics["epochs"]) == 2
    assert metrics["allreduce_floats"] == sum(a.size for a in arrays(tmp_path / "a.npz").values()) + 1

    # rank 1 killed after step 17: the launcher stops rank 0 too; the step-15 checkpoint is there
    killed, seconds = run([*ranks(mpiexec), *fastnn_cli(*RUN, "--checkpoint", "b.ck.npz", "--checkpoint-every", "5",
                                                         "--save", "b.npz")], tmp_path, mnist_dir,
                          FASTNN_TEST_KILL="step:17@1")
    assert killed.returncode != 0 and not (tmp_path / "b.npz").exists()
    assert seconds < 60, f"the ranks took {seconds:.0f} s to stop after one was killed"
    from fastnn.checkpoint import CHECKPOINT_FORMAT, load_arrays
    trainer = load_arrays(tmp_path / "b.ck.npz", CHECKPOINT_FORMAT)[0]["trainer"]
    assert (trainer["epoch"], trainer["step"], trainer["world_size"]) == (1, 3, 2)  # 12 steps per epoch: 15 = 12 + 3
    assert len(trainer["rank_generators"]) == 2

    # on one process, or on 3 ranks, it is refused with the command that resumes it
    alone, _ = run(fastnn_cli("train", "--resume", "b.ck.npz", "--no-progress"), tmp_path, mnist_dir)
    assert alone.returncode == 1
    assert "trained on 2 rank(s), this one has 1" in alone.stderr and "mpiexec -n 2" in alone.stderr, alone.stderr

    resumed, _ = run([*ranks(mpiexec), *fastnn_cli("train", "--distributed", "--resume", "b.ck.npz",
                                                   "--no-progress", "--save", "b.npz")], tmp_path, mnist_dir)
    assert resumed.returncode == 0, resumed.stderr
    a, b = arrays(tmp_path / "a.npz"), arrays(tmp_path / "b.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a), relative_differences(b, a)


# ---------------------------------------------------------------- failures stop every rank

def test_a_rank_that_fails_alone_stops_both_with_its_message(mpiexec, tmp_path, mnist_dir):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(mnist_dir, corrupt)
    labels = corrupt / "train-labels-idx1-ubyte.gz"
    data = bytearray(labels.read_bytes())
    data[len(data) // 2] ^= 0xFF
    labels.write_bytes(bytes(data))
    args = ["train", "--distributed", "--model", "mlp", "--limit", "500", "--epochs", "1", "--no-progress"]
    # MPMD: rank 0 reads the good files, rank 1 (a machine whose copy is damaged) the corrupt ones
    done, seconds = run([mpiexec, "-n", 1, *fastnn_cli(*args), ":", "-n", 1, *fastnn_cli(*args, "--data", corrupt)],
                        tmp_path, mnist_dir)
    assert done.returncode != 0
    assert "error on rank 1 of 2" in done.stderr and "corrupt" in done.stderr, done.stderr
    assert seconds < 60


def test_a_hung_rank_stops_the_run_after_the_timeout(mpiexec, tmp_path, mnist_dir):
    args = ["train", "--distributed", "--model", "mlp", "--limit", "1000", "--epochs", "1", "--no-progress"]
    done, seconds = run([*ranks(mpiexec), *fastnn_cli(*args)], tmp_path, mnist_dir, FASTNN_TEST_KILL="stop:3@1",
                        FASTNN_MPI_TIMEOUT="3")
    assert done.returncode != 0
    assert "error on rank 0 of 2" in done.stderr and "has not joined the step's Allreduce for 3 s" in done.stderr, \
        done.stderr
    assert seconds < 60


def test_a_nan_loss_stops_every_rank_at_the_same_step_reported_once(mpiexec, tmp_path, mnist_dir):
    # one NaN image, in one rank's slice: that rank's own loss is NaN, the other's finite. Each rank
    # says what stopped it; a rank that stopped later would wait in an Allreduce: 10 s, then an error
    done, _ = run([*ranks(mpiexec), sys.executable, WORKER, "nan", "nan", 1000, 537], tmp_path, mnist_dir,
                  FASTNN_MPI_TIMEOUT="10")
    assert done.returncode == 0, done.stderr
    stops = [json.loads((tmp_path / f"nan.{rank}.json").read_text()) for rank in (0, 1)]
    assert [stop["error"] for stop in stops] == ["TrainingDivergedError"] * 2, stops
    assert sorted(math.isnan(stop["own_loss"]) for stop in stops) == [False, True], stops
    named = [re.search(r"at epoch (\d+), step (\d+)", stop["message"]) for stop in stops]
    assert all(named) and named[0].groups() == named[1].groups(), stops
    step = int(named[0][2])
    # neither rank applied that step: both hold the parameters of the step before, finite and equal
    assert [stop["steps"] for stop in stops] == [step - 1] * 2, stops
    assert all(stop["finite"] for stop in stops) and stops[0]["digest"] == stops[1]["digest"], stops

    # the command line prints it once (rank 0), not once per rank
    args = ["train", "--distributed", "--model", "mlp", "--limit", "1000", "--epochs", "1", "--no-progress",
            "--optimizer", "sgd", "--lr", "1e6", "--schedule", "constant"]
    done, _ = run([*ranks(mpiexec), *fastnn_cli(*args)], tmp_path, mnist_dir)
    assert done.returncode == 1
    assert done.stderr.count("error:") == 1 and ("loss became" in done.stderr or "NaN" in done.stderr), done.stderr


# ---------------------------------------------------------------- usage errors, without a launcher

def test_distributed_without_a_launcher_or_without_mpi4py_names_the_fix(mpiexec, tmp_path, mnist_dir):
    alone, _ = run(fastnn_cli("train", "--distributed", "--limit", "100"), tmp_path, mnist_dir)
    assert alone.returncode == 1 and "mpiexec -n 2 fastnn train --distributed" in alone.stderr, alone.stderr
    hide = "import sys; sys.modules['mpi4py'] = None; from fastnn.cli import main; sys.exit(main(sys.argv[1:]))"
    missing, _ = run([sys.executable, "-c", hide, "train", "--distributed"], tmp_path, mnist_dir)
    assert missing.returncode == 1 and 'pip install "fastnn[mpi]"' in missing.stderr, missing.stderr
    info, _ = run(fastnn_cli("info"), tmp_path, mnist_dir)
    assert "distributed (MPI): available: mpi4py" in info.stdout, info.stdout


class FakeComm:
    """Enough of an mpi4py communicator for the checks that need only a rank and a size."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


def test_the_global_batch_must_split_over_the_ranks(mpiexec):
    parallel = DataParallel(comm=FakeComm(0, 4))
    parallel.check_batch_size(100)
    with pytest.raises(ConfigError, match="multiple of 4: use --batch-size 96 or 100"):
        parallel.check_batch_size(98)
    with pytest.raises(ConfigError, match="last batch of each epoch holds 2 of the 1002"):
        parallel.check_epoch(1002, 100)
    parallel.check_epoch(1004, 100)
    assert (parallel.stream(7, 2), DataParallel(comm=FakeComm(0, 1)).stream(7, 2)) == ([7, 2, 0], [7, 2])


def test_the_trainer_refuses_a_parallel_that_is_not_a_data_parallel():
    from fastnn import models, optim
    from fastnn.train import Trainer
    with pytest.raises(ConfigError, match="parallel must be a fastnn.distributed.DataParallel"):
        Trainer(models.build("mlp"), optim.make("adam"), parallel=object())


@pytest.mark.parametrize("value, seconds", [("", 600.0), ("2.5", 2.5), ("0", None), ("-1", None), ("soon", None),
                                            ("inf", None)])
def test_the_mpi_timeout_is_a_positive_number_of_seconds(monkeypatch, value, seconds):
    from fastnn import config
    monkeypatch.setenv("FASTNN_MPI_TIMEOUT", value)
    if seconds is None:
        with pytest.raises(ConfigError, match="FASTNN_MPI_TIMEOUT"):
            config.mpi_timeout()
    else:
        assert config.mpi_timeout() == seconds


@pytest.mark.parametrize("value, rank, point", [("step:3@1", "1", ("step", 3)), ("step:3@1", "0", None),
                                                ("stop:2", "0", ("stop", 2)), ("write:4@0", None, None)])
def test_a_kill_point_can_name_a_rank(monkeypatch, value, rank, point):
    from fastnn import config
    for name in config.LAUNCHER_RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if rank is not None:
        monkeypatch.setenv("PMI_RANK", rank)
    monkeypatch.setenv("FASTNN_TEST_KILL", value)
    assert config.test_kill_point() == point
    monkeypatch.setenv("FASTNN_TEST_KILL", "step:3@x")
    with pytest.raises(ConfigError, match="optionally @RANK"):
        config.test_kill_point()


@pytest.mark.parametrize("n, parts", [(100, 2), (25, 2), (7, 3), (3, 4), (0, 2)])
def test_split_cuts_as_array_split_does(n, parts):
    expected = np.array_split(np.arange(n), parts)
    assert all(np.array_equal(np.arange(n)[split(n, parts, r)], expected[r]) for r in range(parts))
