"""Numba's CUDA simulator, made quicker at its barriers (simulator runs only: tests, no GPU).

The simulator runs every thread of a block as a Python thread. Its launcher waits for them by
polling, without ever letting go of the GIL, so each thread that reaches ``cuda.syncthreads()``
waits for the poller's time slice to run out (Python's switch interval, 5 ms by default) before
the next one may run: a barrier in a block of 16 threads costs tens of milliseconds, and the
shared-memory kernels here (the GEMM, the transpose, the reductions) pass thousands of them.

``speed_up()`` makes the poller yield after each round (``time.sleep(0)``) and shortens the
switch interval; the simulation itself is unchanged (the same threads, the same barriers).
It replaces ``BlockManager.run`` with a copy of numba-cuda 0.30's that differs in that one
line, and leaves the simulator alone when its internals are not the ones this was written for.
"""
import inspect
import sys
import time

import numpy as np

_PATCHED = False


def _polling_run(self, grid_point, *args):
    """numba.cuda.simulator.kernel.BlockManager.run (numba-cuda 0.30), yielding the GIL each round."""
    from numba.cuda.simulator.kernel import BlockThread
    threads = set()
    livethreads = set()
    blockedthreads = set()
    for block_point in np.ndindex(*self._block_dim):

        def target():
            self._f(*args)

        t = BlockThread(target, self, grid_point, block_point, self._debug)
        t.start()
        threads.add(t)
        livethreads.add(t)
    while livethreads:
        for t in livethreads:
            if t.syncthreads_blocked:
                blockedthreads.add(t)
            elif t.exception:
                for t_other in threads:   # abort the others, as the original does
                    t_other.abort = True
                    t_other.syncthreads_blocked = False
                    t_other.syncthreads_event.set()
                raise t.exception[0].with_traceback(t.exception[1])
        if livethreads == blockedthreads:
            for t in blockedthreads:
                t.syncthreads_blocked = False
                t.syncthreads_event.set()
            blockedthreads = set()
        livethreads = set([t for t in livethreads if t.is_alive()])
        time.sleep(0)   # the one change: let the simulated threads run now
    for t in threads:
        if t.exception:
            raise t.exception[0].with_traceback(t.exception[1])


def speed_up():
    """Patch the simulator's block launcher (once); True if it is patched."""
    global _PATCHED
    if _PATCHED:
        return True
    sys.setswitchinterval(min(sys.getswitchinterval(), 5e-4))
    try:
        from numba.cuda.simulator import kernel
        source = inspect.getsource(kernel.BlockManager.run)
    except (ImportError, AttributeError, OSError, TypeError):
        return False
    # the original as this copy knows it: poll the threads' flags, unblock all at once
    expected = ("livethreads == blockedthreads", "t.syncthreads_event.set()", "BlockThread(target, self, grid_point")
    if not all(piece in source for piece in expected) or "time.sleep" in source:
        return False
    kernel.BlockManager.run = _polling_run
    _PATCHED = True
    return True
