"""``fastnn bench``: training-step throughput of each backend on one model, in one process.

Synthetic batches (throughput does not depend on the pixels); the warm-up step that
compiles kernels is timed apart and left out of images/s. benchmarks/ holds the full
suites (per-kernel pytest-benchmark tables, and the comparison with PyTorch).
"""
import time

import numpy as np

from . import backends, models, optim, threads
from .train import Trainer


def measure(model_name, backend, batch_size=100, optimizer="adam", steps=20, seed=0):
    """{"backend", "compile_seconds", "images_per_second"} for ``steps`` training steps."""
    K = backends.use(backend)
    trainer = Trainer(models.build(model_name, seed), optim.make(optimizer), batch_size=batch_size,
                      seed=seed, progress=False)
    compile_seconds = trainer.warmup()
    rng = np.random.default_rng(seed)
    xb = K.to_device(rng.random((batch_size, 1, 28, 28), dtype=np.float32))
    yb = K.to_device(rng.integers(0, 10, batch_size))
    start = time.perf_counter()
    for _ in range(steps):
        loss = trainer.train_step(xb, yb)  # the loss comes back to the host: the step is finished
    seconds = time.perf_counter() - start
    assert np.isfinite(loss)
    return {"backend": backend, "compile_seconds": compile_seconds, "images_per_second": steps * batch_size / seconds}


def run_bench(model_name, names=None, batch_size=100, optimizer="adam", steps=20, n_threads=None):
    names = names or [name for name, reason in backends.available().items() if reason is None]
    results = []
    for name in names:
        backends.use(name)
        n = threads.set_threads(n_threads)
        results.append(measure(model_name, name, batch_size, optimizer, steps))
        r = results[-1]
        print(f"{model_name:12s} {name:7s} {n} threads  batch {batch_size}  "
              f"{r['images_per_second']:10,.0f} images/s   (compile {r['compile_seconds']:.2f} s)", flush=True)
    base = next((r for r in results if r["backend"] == "numpy"), None)
    if base and len(results) > 1:
        for r in results:
            print(f"  {r['backend']:7s} {r['images_per_second'] / base['images_per_second']:6.1f}x numpy")
    return results
