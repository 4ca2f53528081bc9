"""Trainer: shuffled mini-batches, one forward and one backward pass per step, per-epoch metrics.

    trainer = Trainer(model, optim.make("adam"), batch_size=100, seed=0)
    history = trainer.fit(x_train, y_train, epochs=5, test=(x_test, y_test))

Every epoch draws a fresh permutation (no replacement). The training set is put in the
backend's memory once; each step gathers its batch there, so on cuda only the scalar
loss comes back. With the same seed, backend and thread count a run repeats exactly.
"""
import copy
import math
import time

import numpy as np
from tqdm.auto import tqdm

from . import backends
from .errors import ConfigError, ShapeError, TrainingDivergedError
from .losses import SoftmaxCrossEntropy


def check_labels(y, n_images, n_classes, what="labels"):
    """Labels must be whole numbers in [0, n_classes), one per image."""
    y = np.asarray(y)
    if y.shape != (n_images,):
        raise ShapeError(f"{what}: expected shape ({n_images},), one per image, got {y.shape}")
    if y.dtype.kind not in "iu":
        raise ShapeError(f"{what}: expected integer class indices, got dtype {y.dtype}")
    if n_images and (y.min() < 0 or y.max() >= n_classes):
        raise ShapeError(f"{what}: class indices must lie in [0, {n_classes}), found {y.min()}..{y.max()}")
    return y.astype(np.int64, copy=False)


def check_images(x, model, what="images"):
    x = np.asarray(x)
    if x.ndim < 1 or tuple(x.shape[1:]) != model.input_shape or len(x) == 0:
        raise ShapeError(f"{what}: {model.name} expects (N, {', '.join(map(str, model.input_shape))}) "
                         f"with N >= 1, got {x.shape}")
    if x.dtype != model.dtype:
        raise ShapeError(f"{what}: expected {model.dtype} images, got {x.dtype}; convert with .astype(np.float32)")
    return x


class Trainer:
    def __init__(self, model, optimizer, batch_size=100, seed=0, progress=True, eval_batch_size=1000):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive whole number, not {batch_size!r}")
        self.model, self.optimizer = model, optimizer
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.progress = progress
        self.loss = SoftmaxCrossEntropy()
        self.seed = seed
        self.shuffle_rng = np.random.default_rng([seed, 1])
        model.set_rng(np.random.default_rng([seed, 2]))  # dropout masks
        self.epoch = 0
        self.history = []
        self.compile_seconds = None
        model.to_backend()

    # ------------------------------------------------------------------ one step
    def train_step(self, xb, yb) -> float:
        """Forward, backward and update on one batch (arrays in the backend's memory); the loss."""
        logits = self.model.forward(xb, train=True)
        loss = self.loss.forward(logits, yb)
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"the loss became {loss} at epoch {self.epoch + 1}, step {self.optimizer.steps + 1}; "
                f"the parameters are left as they were before this step. The usual cause is a learning "
                f"rate too large for this optimizer ({type(self.optimizer).__name__}, lr {self.optimizer.lr}): "
                f"try a smaller --lr")
        self.model.backward(self.loss.backward())
        self.optimizer.step(self.model)
        return loss

    def warmup(self) -> float:
        """Run one step on a throwaway copy of the model and optimizer, so compiled kernels
        (Numba JIT, cached or not) are ready before the first timed step; returns its seconds."""
        K = backends.get()
        model, optimizer = copy.deepcopy(self.model), copy.deepcopy(self.optimizer)
        model.set_rng(np.random.default_rng(0))
        saved = self.model, self.optimizer
        self.model, self.optimizer = model, optimizer
        rng = np.random.default_rng(0)
        xb = K.to_device(rng.random((self.batch_size,) + model.input_shape, dtype=np.float32).astype(model.dtype))
        yb = K.to_device(rng.integers(0, model.output_shape[0], self.batch_size))
        start = time.perf_counter()
        try:
            self.train_step(xb, yb)
            model.evaluate(K.to_host(xb), K.to_host(yb), batch_size=self.eval_batch_size)
        finally:
            self.model, self.optimizer = saved
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, x_dev, y_dev, n):
        """One pass over a fresh permutation of the n training images; (mean loss, seconds)."""
        K = backends.get()
        order = self.shuffle_rng.permutation(n)
        steps = range(0, n, self.batch_size)
        bar = tqdm(steps, desc=f"epoch {self.epoch + 1}", unit="batch", disable=not self.progress, leave=False)
        total, count = 0.0, 0
        start = time.perf_counter()
        for i, first in enumerate(bar):
            idx = order[first:first + self.batch_size]
            loss = self.train_step(K.gather(x_dev, idx), K.gather(y_dev, idx))
            total += loss * len(idx)
            count += len(idx)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
        bar.close()
        return total / count, time.perf_counter() - start

    def fit(self, x, y, epochs=1, test=None, validation=None, patience=None, monitor="val_loss",
            restore_best=True, on_epoch_end=None):
        """Train for ``epochs`` epochs; returns the list of per-epoch metric dicts.

        test / validation: (images, labels) evaluated after every epoch. Early stopping:
        with ``patience`` set, stop when ``monitor`` (val_loss, val_accuracy, test_loss or
        test_accuracy) has not improved for that many epochs, and (``restore_best``) go
        back to the best epoch's parameters. ``on_epoch_end(trainer, metrics)`` runs after
        each epoch (checkpoints use it).
        """
        model = self.model
        x = check_images(x, model, "training images")
        n_classes = model.output_shape[0]
        y = check_labels(y, len(x), n_classes, "training labels")
        sets = {}
        for prefix, data in (("val", validation), ("test", test)):
            if data is not None:
                images = check_images(data[0], model, f"{prefix} images")
                sets[prefix] = (images, check_labels(data[1], len(images), n_classes, f"{prefix} labels"))
        if patience is not None:
            if monitor.split("_")[0] not in sets or monitor.split("_", 1)[-1] not in ("loss", "accuracy"):
                raise ConfigError(f"early stopping monitors {monitor!r}, but only "
                                  f"{[f'{p}_{m}' for p in sets for m in ('loss', 'accuracy')]} are measured")
            if patience < 1:
                raise ConfigError(f"patience must be 1 or more, not {patience}")
        if self.compile_seconds is None:
            self.warmup()
        K = backends.get()
        x_dev, y_dev = K.to_device(x), K.to_device(y)
        sign = 1.0 if monitor.endswith("loss") else -1.0
        best, best_state, waited = math.inf, None, 0
        for _ in range(int(epochs)):
            train_loss, seconds = self.train_epoch(x_dev, y_dev, len(x))
            self.epoch += 1
            metrics = {"epoch": self.epoch, "train_seconds": seconds, "images_per_second": len(x) / seconds,
                       "train_loss": train_loss}
            for prefix, (images, labels) in sets.items():
                loss, accuracy = model.evaluate(images, labels, self.eval_batch_size)
                metrics[f"{prefix}_loss"], metrics[f"{prefix}_accuracy"] = loss, accuracy
            self.history.append(metrics)
            if on_epoch_end is not None:
                on_epoch_end(self, metrics)
            if patience is not None:
                score = sign * metrics[monitor]
                if score < best:
                    best, waited = score, 0
                    best_state = model.state_arrays() if restore_best else None
                else:
                    waited += 1
                    if waited >= patience:
                        metrics["early_stop"] = True
                        break
        if patience is not None and restore_best and best_state is not None:
            model.load_state_arrays(best_state)
        return self.history
