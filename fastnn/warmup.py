"""Compiling ahead of time, and saying so while it happens.

A numba kernel is compiled the first time it runs with a new signature, then kept in Numba's
on-disk cache, so only the first run of a model on a fresh install (or after fastnn's sources
change) waits for the compiler: 16-93 s for the named models on an AVX2 host. cython, the default
wherever fastnn_ext is built (config.default_backend), compiles nothing at run time.

``compile_progress`` shows that wait as a progress bar of the kernels compiled so far (nothing
at all when every kernel comes from the cache); ``warm_up`` is ``fastnn warmup``: it compiles the
kernels of each model (and, with FASTNN_TUNE=1, times its convolutions: backends/tuning.py), for a
CI job or a Docker image to pay once.
"""
import contextlib
import sys
import threading
import time

from . import backends


class CompileCounter:
    """The kernels Numba compiles while it listens (cache loads are not compiles): ``count`` of the
    top-level ones (a kernel's callees compile inside it) and the one in progress, for the bar."""

    def __init__(self, on_change=None):
        self.count, self.current, self._depth, self._on_change = 0, None, 0, on_change

    def on_start(self, event):
        self._depth += 1
        if self._depth == 1:
            function = event.data["dispatcher"].py_func
            self.current = f"{function.__module__.rsplit('.', 1)[-1]}.{function.__name__}"
            if self._on_change:
                self._on_change(self)

    def on_end(self, event):
        self._depth -= 1
        if self._depth == 0:
            self.count, self.current = self.count + 1, None
            if self._on_change:
                self._on_change(self)

    @contextlib.contextmanager
    def listening(self):
        from numba.core import event

        class Listener(event.Listener):
            on_start, on_end = staticmethod(self.on_start), staticmethod(self.on_end)

        with event.install_listener("numba:compile", Listener()):
            yield self


@contextlib.contextmanager
def compile_progress(show=True, file=None):
    """Count the kernels Numba compiles inside the block (yields the CompileCounter); with ``show``,
    a progress bar appears at the first one (a run whose kernels are all cached shows none) and
    names the kernel being compiled, its clock ticking while a long one compiles."""
    if "numba" not in sys.modules:  # no backend here compiles with Numba: nothing to count
        yield CompileCounter()
        return
    from tqdm.auto import tqdm
    bar, stop = None, threading.Event()

    def update(counter):
        nonlocal bar
        if not show:
            return
        if bar is None:
            bar = tqdm(desc="compiling numba kernels (first run only: cached on disk for next time)",
                       file=file or sys.stderr, bar_format="{desc}: {n} compiled [{elapsed}]{postfix}")
            threading.Thread(target=tick, daemon=True).start()
        bar.n = counter.count
        bar.set_postfix_str(counter.current or "", refresh=True)

    def tick():  # the compiler holds the main thread for seconds at a time: keep the clock moving
        while not stop.wait(0.5):
            bar.refresh()

    counter = CompileCounter(update)
    try:
        with counter.listening():
            yield counter
    finally:
        stop.set()
        if bar is not None:
            bar.close()


def warm_up(model_names, batch_size, progress=True):
    """Compile every kernel a training step and an evaluation of each named model use on the active
    backend (and with FASTNN_TUNE=1 time its convolutions), as the first ``fastnn train`` would; one
    record per model: {"model", "seconds", "kernels_compiled", "tuning_seconds", "shapes_tuned"}."""
    from . import models, optim
    from .backends import tuning
    from .train import Trainer
    K = backends.get()
    records = []
    for name in model_names:
        model = models.build(name, seed=0)
        trainer = Trainer(model, optim.make("adam"), batch_size=batch_size, progress=False)
        before, start = tuning.spent(), time.perf_counter()
        with compile_progress(show=progress and K.NAME == "numba") as counter:
            trainer.warmup()
        after = tuning.spent()
        records.append({"model": name, "seconds": time.perf_counter() - start, "kernels_compiled": counter.count,
                        "tuning_seconds": after.seconds - before.seconds, "shapes_tuned": after.shapes - before.shapes})
    return records
