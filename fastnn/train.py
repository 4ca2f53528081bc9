"""Trainer: shuffled mini-batches, one forward and one backward pass per step, per-epoch metrics.

    trainer = Trainer(model, optim.make("adam"), batch_size=100, seed=0)
    history = trainer.fit(x_train, y_train, epochs=5, test=(x_test, y_test))

Every epoch draws a fresh permutation (no replacement). The training set is put in the
backend's memory once; each step gathers its batch there, so on cuda only the scalar
loss comes back. With the same seed, backend and thread count a run repeats exactly.

Checkpoints (``checkpoint_path``, ``checkpoint_every``) hold everything that decides what
comes next: parameters and buffers, optimizer state, epoch and step, the shuffle generator's
state from before the current epoch's permutation (so an interrupted epoch is replayed with
the same order), the dropout generator's state, the partial epoch's loss sum, the metrics
and the caller's settings. ``Trainer.from_checkpoint(path)`` continues such a run, and
ends with exactly the parameters an uninterrupted run would have.
"""
import json
import math
import time

import numpy as np
from tqdm.auto import tqdm

from . import backends, optim
from .checkpoint import (CHECKPOINT_FORMAT, MODEL_PREFIXES, VERSION, load_arrays, load_model_arrays,
                         model_from_metadata, save_arrays, test_kill)
from .errors import CheckpointError, ConfigError, TrainingDivergedError
from .losses import SoftmaxCrossEntropy
from .model import check_batch_size, check_images, check_labels  # noqa: F401 (check_* were defined here)
from .threads import current_threads

# what a checkpoint's "optimizer" entry holds besides the optimizer's settings (its config())
OPTIMIZER_STATE = ("steps", "lr_in_use")


def _in_backend_memory(a) -> bool:
    """An array that is not NumPy's but has a shape and a dtype: a cuda device array."""
    return not isinstance(a, np.ndarray) and hasattr(a, "shape") and hasattr(a, "dtype")


def _shape_and_dtype(a):
    """A host stand-in for device array ``a``: its shape and dtype, and no data (one zero seen
    through zero strides), so that the host checks read those two without copying ``a`` back."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, a.dtype), shape=tuple(a.shape), strides=(0,) * len(a.shape))


class Trainer:
    def __init__(self, model, optimizer, batch_size=100, seed=0, progress=True, eval_batch_size=1000,
                 checkpoint_path=None, checkpoint_every=None, settings=None, regularizer=None,
                 finite_check_every=50):
        """``checkpoint_path``: write a checkpoint there after every epoch, and after every
        ``checkpoint_every`` optimizer steps if that is set. ``settings``: JSON-able facts about
        the run that checkpoints keep for the caller (the command line keeps its arguments there).
        ``finite_check_every``: check that every parameter is finite after that many steps, and
        at each epoch's end (None: at epoch ends only). A NaN weight need not make the loss NaN
        (a ReLU or a max-pool downstream may never pass it on), so the loss check alone can miss
        it; the check reads each parameter once (simple-cnn's 434k: 0.05 ms on the CPU, against
        about 5 ms per training step; on cuda it copies them to the host, 1.7 MB for simple-cnn,
        where every step already waits for its loss, so no queued work is held up)."""
        self.batch_size = check_batch_size(batch_size)
        self.finite_check_every = (None if finite_check_every is None
                                   else check_batch_size(finite_check_every, "finite_check_every"))
        self.eval_batch_size = check_batch_size(eval_batch_size, "eval_batch_size")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a whole number >= 0, not {seed!r}")
        if checkpoint_every is not None:
            checkpoint_every = check_batch_size(checkpoint_every, "checkpoint_every")
            if checkpoint_path is None:
                raise ConfigError("checkpoint_every needs a checkpoint_path to write to")
        self.model, self.optimizer = model, optimizer
        self.regularizer = regularizer  # its penalty joins the loss, its gradient the weights' gradients
        self.progress = progress
        self.loss = SoftmaxCrossEntropy()
        self.seed = int(seed)
        self.shuffle_rng = np.random.default_rng([self.seed, 1])
        model.set_rng(np.random.default_rng([self.seed, 2]))  # dropout masks
        self.checkpoint_path, self.checkpoint_every = checkpoint_path, checkpoint_every
        self.settings = dict(settings or {})
        try:
            json.dumps(self.settings)  # fail now, not at the first checkpoint
        except (TypeError, ValueError) as e:
            raise ConfigError(f"settings must be JSON-able: {e}") from e
        self.epoch = 0                 # epochs completed
        self.history = []
        self.compile_seconds = None
        # the epoch under way, all saved in checkpoints
        self.step = 0                  # its steps completed
        self.epoch_loss, self.epoch_images, self.epoch_seconds = 0.0, 0, 0.0
        self.epoch_rng_state = None    # shuffle_rng's state before its permutation
        self.train_size = None         # images per epoch
        # early stopping
        self.best_score, self.epochs_waited, self.best_state = math.inf, 0, None
        self.resumed = False           # fit() continues the early-stopping count of a resumed run
        self.last_checkpoint = None    # (path, epoch, step) of the last checkpoint written or resumed
        model.to_backend()

    # ------------------------------------------------------------------ one step
    def train_step(self, xb, yb) -> float:
        """Forward, backward and update on one batch; the loss.

        ``xb``: (N, *input_shape) images of the model's dtype; ``yb``: (N,) integer labels in
        [0, classes). Host arrays are checked in full and then put into the backend's memory;
        arrays already there (cuda's device arrays) are checked for shape and dtype only, without a
        copy back: a label out of range there makes the loss kernel's result NaN, and the loss then
        reads the labels to say so. The checks come before any kernel runs, since a compiled kernel
        indexes without bounds checks.
        """
        xb, yb = self._checked_batch(xb, yb)
        logits = self.model.forward(xb, train=True)
        loss = self.loss.forward(logits, yb)
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"the loss became {loss} at epoch {self.epoch + 1}, step {self.optimizer.steps + 1}; "
                f"the parameters are left as they were before this step. The usual cause is a learning "
                f"rate too large for this optimizer ({type(self.optimizer).__name__}, lr {self.optimizer.lr}): "
                f"try a smaller --lr")
        self.model.backward(self.loss.backward())
        if self.regularizer is not None:  # fastnn.regularization: L1, L2, ElasticNet
            loss += self.regularizer.add_gradients(self.model)
        self.optimizer.step(self.model)
        return loss

    def _checked_batch(self, xb, yb):
        """train_step's batch, checked by fastnn.model's check_images and check_labels, in the
        backend's memory."""
        K, model = backends.get(), self.model
        if _in_backend_memory(xb):
            check_images(_shape_and_dtype(xb), model, "train_step images")
        else:
            xb = check_images(xb, model, "train_step images")
        classes = model.output_shape[0]
        if _in_backend_memory(yb):  # its shape and dtype; the loss sees its range
            check_labels(_shape_and_dtype(yb), xb.shape[0], classes, "train_step labels")
        else:
            yb = check_labels(yb, xb.shape[0], classes, "train_step labels")
        return K.to_device(xb), K.to_device(yb)

    def warmup(self) -> float:
        """Run one step on random data, so compiled kernels (Numba JIT, cached or not) are ready
        before the first timed step; returns its seconds. The parameters, buffers, optimizer state
        and dropout generator are then put back exactly as they were, through host copies (device
        arrays do not deep-copy)."""
        K = backends.get()
        model, optimizer = self.model, self.optimizer
        saved = (model.state_arrays(), optimizer.steps, model.rng,
                 {key: [K.to_device(K.to_host(a).copy()) for a in state] for key, state in optimizer.state.items()})
        model.set_rng(np.random.default_rng(0))
        rng = np.random.default_rng(0)
        xb = K.to_device(rng.random((self.batch_size,) + model.input_shape, dtype=np.float32).astype(model.dtype))
        yb = K.to_device(rng.integers(0, model.output_shape[0], self.batch_size))
        start = time.perf_counter()
        try:
            self.train_step(xb, yb)
            model.evaluate(K.to_host(xb), K.to_host(yb), batch_size=self.eval_batch_size)
        finally:
            arrays, optimizer.steps, dropout_rng, optimizer.state = saved
            model.load_state_arrays(arrays)
            model.set_rng(dropout_rng)
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, x_dev, y_dev, n):
        """One pass over a fresh permutation of the n training images; (mean loss, seconds).

        A trainer resumed mid-epoch draws the same permutation again and goes on from its step.
        """
        K = backends.get()
        self.epoch_rng_state = self.shuffle_rng.bit_generator.state
        order = self.shuffle_rng.permutation(n)
        n_steps = -(-n // self.batch_size)
        if self.step > n_steps:
            raise ConfigError(f"this epoch is at step {self.step}, but {n} images make only {n_steps} steps "
                              f"of {self.batch_size}: resume with the training data the checkpoint was made with")
        self.train_size = n
        bar = tqdm(range(self.step, n_steps), desc=f"epoch {self.epoch + 1}", unit="batch",
                   disable=not self.progress, leave=False)
        seconds, start = self.epoch_seconds, time.perf_counter()
        for i in bar:
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            loss = self.train_step(K.gather(x_dev, idx), K.gather(y_dev, idx))
            self.step = i + 1
            self.epoch_loss += loss * len(idx)
            self.epoch_images += len(idx)
            test_kill("step", self.optimizer.steps)
            if self.finite_check_every and self.optimizer.steps % self.finite_check_every == 0:
                self.check_parameters()
            if self.checkpoint_every and self.optimizer.steps % self.checkpoint_every == 0:
                self.epoch_seconds = seconds + time.perf_counter() - start
                self.checkpoint()  # its write time does not count as training time
                seconds, start = self.epoch_seconds, time.perf_counter()
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
        bar.close()
        result = self.epoch_loss / self.epoch_images, seconds + time.perf_counter() - start
        self.step, self.epoch_loss, self.epoch_images, self.epoch_seconds = 0, 0.0, 0, 0.0
        return result

    def fit(self, x, y, epochs=1, test=None, validation=None, patience=None, monitor="val_loss",
            restore_best=True, on_epoch_end=None):
        """Train for ``epochs`` epochs; returns the list of per-epoch metric dicts.

        test / validation: (images, labels) evaluated after every epoch. Early stopping:
        with ``patience`` set, stop when ``monitor`` (val_loss, val_accuracy, test_loss or
        test_accuracy) has not improved for that many epochs, and (``restore_best``) go
        back to the best epoch's parameters. ``on_epoch_end(trainer, metrics)`` runs after
        each epoch. With ``checkpoint_path`` set, a checkpoint is written after each epoch.
        A trainer resumed mid-epoch finishes that epoch first; it counts as one of ``epochs``.
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
        if self.step and len(x) != self.train_size:
            raise ConfigError(f"this trainer stopped mid-epoch on {self.train_size} training images, not {len(x)}: "
                              f"resume with the same training data")
        if self.compile_seconds is None:
            self.warmup()
        K = backends.get()
        x_dev, y_dev = K.to_device(x), K.to_device(y)
        if not self.resumed:
            self.best_score, self.epochs_waited, self.best_state = math.inf, 0, None
        self.resumed = False
        try:
            self._epochs(x, x_dev, y_dev, int(epochs), sets, patience, monitor, restore_best, on_epoch_end)
        except TrainingDivergedError as e:
            if self.last_checkpoint is None:
                raise
            path, epoch, step = self.last_checkpoint
            raise TrainingDivergedError(f"{e}. The last checkpoint, {path} (after {epoch} epochs and {step} "
                                        f"steps), is kept as it was") from e
        if patience is not None and restore_best and self.best_state is not None:
            model.load_state_arrays(self.best_state)
        return self.history

    def _epochs(self, x, x_dev, y_dev, epochs, sets, patience, monitor, restore_best, on_epoch_end):
        """fit's loop over epochs, its arguments checked."""
        model = self.model
        sign = 1.0 if monitor.endswith("loss") else -1.0
        for _ in range(epochs):
            train_loss, seconds = self.train_epoch(x_dev, y_dev, len(x))
            self.check_parameters()
            self.epoch += 1
            self.optimizer.end_epoch()
            metrics = {"epoch": self.epoch, "train_seconds": seconds, "images_per_second": len(x) / seconds,
                       "train_loss": train_loss}
            for prefix, (images, labels) in sets.items():
                loss, accuracy = model.evaluate(images, labels, self.eval_batch_size)
                metrics[f"{prefix}_loss"], metrics[f"{prefix}_accuracy"] = loss, accuracy
            self.history.append(metrics)
            if on_epoch_end is not None:
                on_epoch_end(self, metrics)
            stop = False
            if patience is not None:
                score = sign * metrics[monitor]
                if score < self.best_score:
                    self.best_score, self.epochs_waited = score, 0
                    self.best_state = model.state_arrays() if restore_best else None
                else:
                    self.epochs_waited += 1
                    stop = self.epochs_waited >= patience
                    if stop:
                        metrics["early_stop"] = True
            if self.checkpoint_path is not None:
                self.checkpoint()
            if stop:
                break

    def check_parameters(self, arrays=None, consequence=""):
        """Raise TrainingDivergedError if a parameter or buffer (``arrays``: host copies; default:
        the model's own, read in place on the CPU) is no longer finite."""
        if arrays is None:
            K = backends.get()
            arrays = {key: K.to_host(table[name]) for key, table, name in self.model._arrays()}
        bad = sorted(key for key, a in arrays.items() if not np.isfinite(a).all())
        if bad:
            raise TrainingDivergedError(
                f"the parameters {bad[:3]} became NaN or infinite by epoch {self.epoch + (1 if self.step else 0)}, "
                f"step {self.optimizer.steps}{consequence}. The usual cause is a learning rate too large for "
                f"this optimizer ({type(self.optimizer).__name__}, lr {self.optimizer.lr}): try a smaller --lr")

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, path=None):
        """Write everything needed to continue this run exactly to ``path`` (default:
        ``checkpoint_path``), atomically: a crash mid-write leaves the previous checkpoint intact.
        Parameters that are no longer finite are never written: the last good checkpoint stays."""
        path = self.checkpoint_path if path is None else path
        if path is None:
            raise ConfigError("Trainer.checkpoint needs a path (or a checkpoint_path given to the Trainer)")
        model_arrays = self.model.state_arrays()
        self.check_parameters(model_arrays, ", so no checkpoint was written")
        optimizer_state = self.optimizer.state_dict()
        arrays = dict(model_arrays)
        arrays.update({f"optim/{key}": a for key, a in optimizer_state["arrays"].items()})
        if self.best_state is not None:
            arrays.update({f"best/{key}": a for key, a in self.best_state.items()})
        K = backends.get()
        trainer = {
            "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size, "seed": self.seed,
            "epoch": self.epoch, "step": self.step, "train_size": self.train_size,
            "epoch_loss": self.epoch_loss, "epoch_images": self.epoch_images, "epoch_seconds": self.epoch_seconds,
            # mid-epoch: the state that drew this epoch's permutation; between epochs: the next one's
            "shuffle_rng": self.epoch_rng_state if self.step else self.shuffle_rng.bit_generator.state,
            "dropout_rng": self.model.rng.bit_generator.state,
            "best_score": None if math.isinf(self.best_score) else self.best_score,
            "epochs_waited": self.epochs_waited, "history": self.history,
            "regularizer": None if self.regularizer is None else repr(self.regularizer),
            "backend": K.NAME, "threads": current_threads(),
        }
        metadata = {"format": CHECKPOINT_FORMAT, "version": VERSION, "model": self.model.config(),
                    "optimizer": {**self.optimizer.config(), "steps": optimizer_state["steps"],
                                  "lr_in_use": optimizer_state["lr"]},
                    "trainer": trainer, "settings": self.settings}
        save_arrays(path, metadata, arrays)
        self.last_checkpoint = (str(path), self.epoch, self.step)
        return path

    @classmethod
    def from_checkpoint(cls, path, progress=True, checkpoint_path=None, checkpoint_every=None, regularizer=None):
        """A trainer that continues the run saved in ``path``: its model, optimizer and settings
        are rebuilt from the file. Its ``settings`` are the ones the run was started with.
        A run with a regularizer needs the same one again (the file only names it)."""
        metadata, arrays = load_arrays(path, CHECKPOINT_FORMAT)
        model = model_from_metadata(path, metadata, arrays)
        try:
            hyper = {k: v for k, v in metadata["optimizer"].items() if k not in OPTIMIZER_STATE}
            optimizer = optim.make(**hyper)
            t = metadata["trainer"]
            trainer = cls(model, optimizer, batch_size=t["batch_size"], seed=t["seed"], progress=progress,
                          eval_batch_size=t["eval_batch_size"], checkpoint_path=checkpoint_path,
                          checkpoint_every=checkpoint_every, settings=metadata.get("settings"),
                          regularizer=regularizer)
        except (KeyError, TypeError, AttributeError, ConfigError) as e:
            raise CheckpointError(f"{path}: malformed trainer settings in its metadata ({e})") from e
        trainer._restore(path, metadata, arrays)
        return trainer

    def resume(self, path):
        """Continue the run saved in ``path`` with this trainer's model and optimizer, which must
        be the ones it was made with (same architecture, optimizer settings, batch size and seed)."""
        metadata, arrays = load_arrays(path, CHECKPOINT_FORMAT)
        optimizer = self.optimizer
        before = (dict(vars(self)), self.model.state_arrays(), optimizer.steps, optimizer.state, optimizer.lr,
                  self.shuffle_rng.bit_generator.state, self.model.rng.bit_generator.state)
        try:
            self._restore(path, metadata, arrays)
        except CheckpointError:  # a refused checkpoint leaves this trainer as it was
            attributes, model_arrays, optimizer.steps, optimizer.state, optimizer.lr, shuffle, dropout = before
            self.__dict__.update(attributes)
            self.model.load_state_arrays(model_arrays)
            self.shuffle_rng.bit_generator.state, self.model.rng.bit_generator.state = shuffle, dropout
            raise
        return self

    def _restore(self, path, metadata, arrays):
        def same(a, b):  # compare as the JSON file holds them (tuples become lists)
            return json.loads(json.dumps(a)) == b
        try:
            t = metadata["trainer"]
            if not same(self.model.config(), metadata["model"]):
                raise CheckpointError(f"{path}: its architecture differs from this model's")
            saved_optimizer = {k: v for k, v in metadata["optimizer"].items() if k not in OPTIMIZER_STATE}
            if not same(self.optimizer.config(), saved_optimizer):
                raise CheckpointError(f"{path}: its optimizer {saved_optimizer} differs from this one "
                                      f"{self.optimizer.config()}")
            mine = None if self.regularizer is None else repr(self.regularizer)
            if t.get("regularizer") != mine:
                raise CheckpointError(f"{path}: the run used regularizer {t.get('regularizer')}, this trainer {mine}")
            for name in ("batch_size", "seed"):
                if t[name] != getattr(self, name):
                    raise CheckpointError(f"{path}: {name} {t[name]!r} differs from this trainer's "
                                          f"{getattr(self, name)!r}")
            whole = {"epoch": t["epoch"], "step": t["step"], "epochs_waited": t["epochs_waited"],
                     "epoch_images": t["epoch_images"]}
            for name, value in whole.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise CheckpointError(f"{path}: trainer {name} must be a whole number >= 0, not {value!r}")
            if not isinstance(t["history"], list) or not all(isinstance(m, dict) for m in t["history"]):
                raise CheckpointError(f"{path}: its metrics history is not a list of dicts")
            unknown = sorted(k for k in arrays if not k.startswith(MODEL_PREFIXES + ("optim/", "best/")))
            if unknown:
                raise CheckpointError(f"{path}: arrays {unknown} belong to no part of a checkpoint")
            load_model_arrays(path, self.model, arrays)
            optimizer_arrays = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
            try:
                saved = metadata["optimizer"]
                self.optimizer.load_state_dict({"steps": saved["steps"], "lr": saved.get("lr_in_use", saved["lr"]),
                                                "arrays": optimizer_arrays}, self.model)
            except CheckpointError as e:
                raise CheckpointError(f"{path}: {e}") from e
            best = {k[len("best/"):]: v for k, v in arrays.items() if k.startswith("best/")}
            expected = self.model.state_arrays()
            if best and (set(best) != set(expected) or any(best[k].shape != expected[k].shape for k in best)):
                raise CheckpointError(f"{path}: its best-epoch parameters do not match the architecture")
            self.shuffle_rng.bit_generator.state = t["shuffle_rng"]
            self.model.rng.bit_generator.state = t["dropout_rng"]
            self.epoch, self.step = t["epoch"], t["step"]
            self.epoch_loss, self.epoch_images = float(t["epoch_loss"]), t["epoch_images"]
            self.epoch_seconds = float(t["epoch_seconds"])
            self.epoch_rng_state = t["shuffle_rng"]
            self.train_size = t["train_size"]
            self.best_score = math.inf if t["best_score"] is None else float(t["best_score"])
            self.epochs_waited = t["epochs_waited"]
            self.best_state = {k: v.astype(expected[k].dtype) for k, v in best.items()} or None
            self.history = list(t["history"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{path}: malformed trainer state in its metadata ({e!r})") from e
        self.resumed = True
        self.last_checkpoint = (str(path), self.epoch, self.step)
