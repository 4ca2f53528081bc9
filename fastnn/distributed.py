"""Data-parallel training over MPI: ``mpiexec -n N fastnn train --distributed``.

fastnn builds no cluster machinery of its own: the MPI library a cluster already has starts the
N processes ("ranks") and moves the numbers between them; mpi4py is its Python binding.

What each rank does, every step (fastnn.Trainer does it when given a ``DataParallel``):

* Every rank holds the whole model, and draws the same permutation from the same seed, so all
  of them agree on the global batch of ``batch_size`` images. Rank r takes its slice of it
  (``np.array_split``'s r-th part: the first ``batch_size % N`` ranks get one image more).
* Forward and backward on that slice give the mean gradient over the slice.
* One in-place Allreduce (a sum) over one flat float32 buffer then averages them:

      flat = [ grad_1 * n_r/n | grad_2 * n_r/n | ... | BatchNorm running statistics / N | loss * n_r/n ]

  Summed over the ranks, the gradients weighted by their slice's share n_r/n are exactly the
  mean gradient over the global batch of n images: the gradient one process would compute on
  the whole batch, up to the order of the float32 additions. The loss rides along in the same
  call, so a NaN on any rank stops every rank at the same step (TrainingDivergedError, the
  parameters untouched). BatchNorm normalises each rank's slice by the slice's own statistics
  (as PyTorch's DistributedDataParallel does without SyncBatchNorm); its running statistics
  are averaged in the same call, so every rank evaluates with the same ones.
* Every rank applies the same optimizer update to the same parameters: they stay identical
  without ever being sent.

Dropout masks and augmentation draws come from per-rank streams derived from the seed (a
1-rank run uses the single-process streams, so it repeats a plain run exactly). Rank 0 alone
shows the progress bar and writes the metrics, the model and checkpoints; a checkpoint keeps
every rank's generator states, so an N-rank run resumes exactly on N ranks (and is refused on
any other number: the slices, and so the dropout streams, depend on N).

A rank that dies takes the run down: the MPI launcher (MPICH's and Open MPI's) kills the other
ranks when one of them is killed or calls MPI_Abort, which fastnn does after printing an error
that one rank alone met. A rank that hangs instead (stopped, or on a machine that dropped off
the network) is caught by the Allreduce's time limit (FASTNN_MPI_TIMEOUT seconds, default 600):
the ranks waiting for it stop with an error naming it, instead of waiting for ever.
"""
import os
import shutil
import sys
import time

import numpy as np

from . import backends, config
from .errors import ConfigError, DistributedError

INSTALL = 'pip install "fastnn[mpi]" (mpi4py, and the mpich wheel with its mpiexec)'
ABORT_GRACE_SECONDS = 1.0


def import_mpi():
    """mpi4py's MPI module, or a DistributedError that names the install step."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(f"--distributed needs mpi4py and an MPI library ({e}): {INSTALL}") from e
    return MPI


def mpi_status() -> str:
    """One line for ``fastnn info``: whether distributed training can run here."""
    try:
        import mpi4py
    except ImportError:
        return f"unavailable: mpi4py is not installed; {INSTALL}"
    launcher = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    try:
        # the library's name without starting MPI: mpi4py loads libmpi when MPI is imported
        from mpi4py import MPI
        library = MPI.Get_library_version().splitlines()[0].strip()
    except Exception as e:  # noqa: BLE001  mpi4py present but no libmpi it can load
        return f"unavailable: mpi4py {mpi4py.__version__} cannot load an MPI library ({e}); {INSTALL}"
    where = launcher or "no mpiexec on PATH"
    return f"available: mpi4py {mpi4py.__version__}, {library}; launcher {where}"


def split(n: int, parts: int, index: int) -> slice:
    """The ``index``-th of ``parts`` nearly equal slices of range(n), as np.array_split cuts it."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return slice(start, start + base + (index < extra))


class DataParallel:
    """One process's part in a data-parallel run: its rank, the world's size, and the per-step
    Allreduce (see the module's docstring). ``comm``: an mpi4py communicator (default: the world)."""

    def __init__(self, comm=None, timeout=None):
        MPI = import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = config.mpi_timeout() if timeout is None else float(timeout)
        self.flat = None          # the Allreduce's buffer, made at the first step and reused
        self.allreduce_seconds = 0.0  # in the Allreduce, waiting for the slowest rank included
        self.allreduce_calls = 0

    @classmethod
    def launched(cls):
        """The DataParallel of a process that mpiexec started; a DistributedError otherwise."""
        mpi = cls()
        if mpi.size == 1 and config.launcher_rank() is None:
            raise DistributedError("--distributed runs under an MPI launcher: mpiexec -n 2 fastnn train "
                                   f"--distributed ...; {INSTALL} brings one")
        return mpi

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def local_threads(self) -> int:
        """The usable cores shared out among the ranks on this machine (at least 1 each), so that
        N ranks with their Numba, OpenMP and BLAS threads do not oversubscribe the cores."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            return max(1, config.usable_cpus() // local.Get_size())
        finally:
            local.Free()

    def check_batch_size(self, batch_size):
        if batch_size % self.size:
            raise ConfigError(f"--batch-size {batch_size} is the global batch, split over {self.size} ranks, and "
                              f"must be a multiple of {self.size}: use --batch-size "
                              f"{max(self.size, batch_size - batch_size % self.size)} or "
                              f"{batch_size + self.size - batch_size % self.size}")

    def check_epoch(self, n_images, batch_size):
        """Every step of an epoch must give every rank at least one image."""
        last = n_images % batch_size
        if 0 < last < self.size:
            raise ConfigError(f"the last batch of each epoch holds {last} of the {n_images} training images, fewer "
                              f"than the {self.size} ranks: change --batch-size or --limit so that it holds "
                              f"{self.size} or more (or none)")

    def stream(self, *key):
        """A generator seed for this rank's stream of ``key`` (seed, purpose): the key itself on a
        1-rank run, so it repeats a single-process run; with the rank appended otherwise."""
        return list(key) + ([self.rank] if self.size > 1 else [])

    # ------------------------------------------------------------------ the step's Allreduce
    def average_gradients(self, model, loss, n_local, n_global) -> float:
        """Replace every gradient of ``model`` by its average over the global batch of ``n_global``
        images (this rank computed the mean over its ``n_local``), average the BatchNorm running
        statistics, and return the global batch's mean loss: one Allreduce."""
        arrays = self._step_arrays(model)
        if self.flat is None:
            self.flat = np.empty(sum(a.size for a, _ in arrays) + 1, dtype=model.dtype)
        flat, share = self.flat, n_local / n_global
        offset = 0
        for array, kind in arrays:  # flat[offset:offset + size] = array.ravel() * weight, without a temporary
            np.multiply(array.reshape(-1), share if kind == "grad" else 1.0 / self.size,
                        out=flat[offset:offset + array.size])
            offset += array.size
        flat[-1] = loss * share
        self.allreduce(flat)
        offset = 0
        for array, _ in arrays:
            array[...] = flat[offset:offset + array.size].reshape(array.shape)
            offset += array.size
        return float(flat[-1])

    @staticmethod
    def _step_arrays(model):
        """[(array, "grad" | "buffer")] in the buffer's order: read afresh every step, since a
        backward pass may hand a layer new gradient arrays."""
        if backends.get().NAME == "cuda":
            raise ConfigError("--distributed runs on the CPU backends (numba, cython, numpy): the MPI library "
                              "from the package index sends host memory, not GPU memory")
        arrays = [(grad, "grad") for _, _, grad in model.param_items()]
        arrays += [(layer.buffers[name], "buffer") for layer in model.layers for name in layer.buffers]
        for array, kind in arrays:
            if not array.flags.c_contiguous:  # reshape(-1) must be a view for the write back
                raise ConfigError(f"distributed training needs contiguous arrays; a {kind} of shape "
                                  f"{array.shape} is not")
        return arrays

    def allreduce(self, buffer):
        """Sum ``buffer`` over the ranks, in place, giving up after ``timeout`` seconds."""
        start = time.perf_counter()
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        deadline = start + self.timeout
        while not request.Test():  # MPI has no Wait with a time limit; Test also drives MPI's progress
            if time.perf_counter() > deadline:
                raise DistributedError(f"another rank has not joined the step's Allreduce for {self.timeout:g} s "
                                       f"(FASTNN_MPI_TIMEOUT): it died or hangs")
        self.allreduce_seconds += time.perf_counter() - start
        self.allreduce_calls += 1

    def in_sync(self, model) -> bool:
        """Whether every rank holds the same parameters and buffers (a check for tests and debugging:
        it sends them all)."""
        mine = np.concatenate([a.reshape(-1).astype(np.float64) for a in model.state_arrays().values()])
        root = self.comm.bcast(mine if self.is_root else None, root=0)
        return bool(self.comm.allreduce(int(np.array_equal(mine, root)), op=self.MPI.MIN))

    # ------------------------------------------------------------------ evaluation and checkpoints
    def evaluate(self, model, images, labels, batch_size):
        """model.evaluate over the whole set, each rank evaluating its slice: (mean loss, accuracy)."""
        part = split(len(images), self.size, self.rank)
        n = part.stop - part.start
        loss, accuracy = model.evaluate(images[part], labels[part], batch_size) if n else (0.0, 0.0)
        totals = np.array([loss * n, accuracy * n, n], np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, totals, op=self.MPI.SUM)
        return totals[0] / totals[2], totals[1] / totals[2]

    def gather(self, value):
        """``value`` of every rank, in rank order, on rank 0 (None on the others)."""
        return self.comm.gather(value, root=0)

    def abort(self, code=1):
        """Stop every rank now (the launcher kills the others): for an error this rank met alone.
        The pause first lets the launcher forward what this rank printed: output still on its way
        when MPI_Abort kills the processes is lost (a CI run lost a whole error message so)."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_SECONDS)
        self.comm.Abort(code)

    def summary(self) -> dict:
        steps = max(self.allreduce_calls, 1)
        return {"world_size": self.size, "allreduce_floats": 0 if self.flat is None else int(self.flat.size),
                "allreduce_seconds_per_step": self.allreduce_seconds / steps}
