"""Trainer: shuffled mini-batches, one forward and one backward pass per step, per-epoch metrics.

    trainer = Trainer(model, optim.make("adam"), batch_size=100, seed=0)
    history = trainer.fit(x_train, y_train, epochs=5, test=(x_test, y_test))

    trainer = Trainer(model, optim.make("adam", lr=0.003), schedule=schedules.OneCycle(),
                      label_smoothing=0.1, augment=RandomAffine(shift=2, degrees=10))
    trainer.fit(x_train, y_train, epochs=5, test=(x_test, y_test), eval_every=100, target_accuracy=0.99)

Every epoch draws a fresh permutation (no replacement). The training set is put in the
backend's memory once (and fit's test set too); each step gathers its batch there. On cuda
the permutation, dropout masks and augmentations are drawn on the device (its Generator) and
the losses wait there, read back every few steps (its LossLog): a step copies nothing either
way. With the same seed, backend and thread count a run repeats exactly.
Before each step the schedule sets the optimizer's rate; an augmentation, when given, warps
the batch in the backend's memory.

Checkpoints (``checkpoint_path``, ``checkpoint_every``) hold everything that decides what
comes next: parameters and buffers, optimizer state, epoch and step, the shuffle generator's
state from before the current epoch's permutation (so an interrupted epoch is replayed with
the same order), the dropout and augmentation generators' states, the schedule, the partial
epoch's loss sum, the run's clock and evaluations, the metrics and the caller's settings.
``Trainer.from_checkpoint(path)`` continues such a run, and ends with exactly the parameters an
uninterrupted run would have.

Given a fastnn.distributed.DataParallel (``parallel``), the trainer is one rank of a data-parallel
run over MPI: each step it trains on its slice of the global batch, and one Allreduce averages the
gradients (fastnn/distributed.py says how); rank 0 alone shows progress and writes checkpoints,
which then hold every rank's generators.
"""
import json
import math
import time

import numpy as np
from tqdm.auto import tqdm

from . import backends, optim, schedules
from .augment import RandomAffine
from .checkpoint import (CHECKPOINT_FORMAT, MODEL_PREFIXES, VERSION, load_arrays, load_model_arrays,
                         model_from_metadata, save_arrays, test_kill)
from .distributed import DataParallel, split
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
                 finite_check_every=50, schedule=None, label_smoothing=0.0, augment=None, parallel=None):
        """``checkpoint_path``: write a checkpoint there after every epoch, and after every
        ``checkpoint_every`` optimizer steps if that is set. ``settings``: JSON-able facts about
        the run that checkpoints keep for the caller (the command line keeps its arguments there).
        ``finite_check_every``: check that every parameter is finite after that many steps, and
        at each epoch's end (None: at epoch ends only). A NaN weight need not make the loss NaN
        (a ReLU or a max-pool downstream may never pass it on), so the loss check alone can miss
        it; the check reads each parameter once (simple-cnn's 434k: 0.05 ms on the CPU, against
        about 5 ms per training step; on cuda a kernel checks them where they are, and one flag
        per array comes back, with the losses read before it).
        ``schedule``: a fastnn.schedules.Schedule (None: constant), which sets the optimizer's rate
        before every step; it spans each fit() call. ``label_smoothing``: the training loss's
        (evaluation reports the plain loss). ``augment``: a fastnn.augment.RandomAffine (or None)
        applied to every training batch, with its own generator seeded from ``seed``.
        ``parallel``: a fastnn.distributed.DataParallel when this process is one rank of a
        data-parallel run (``batch_size`` is then the global batch; see that module)."""
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
        if schedule is not None and not isinstance(schedule, schedules.Schedule):
            raise ConfigError(f"schedule must be a fastnn.schedules schedule (e.g. schedules.make('onecycle')) "
                              f"or None, not {schedule!r}")
        if augment is not None and not isinstance(augment, RandomAffine):
            raise ConfigError(f"augment must be a fastnn.RandomAffine or None, not {augment!r}")
        if parallel is not None and not isinstance(parallel, DataParallel):
            raise ConfigError(f"parallel must be a fastnn.distributed.DataParallel (made in a process that "
                              f"mpiexec started) or None, not {parallel!r}")
        self.schedule = schedules.Constant() if schedule is None else schedule
        self.loss = SoftmaxCrossEntropy(label_smoothing)
        self.label_smoothing = float(label_smoothing)
        self.augment = augment
        self.seed = int(seed)
        self.parallel = parallel
        if parallel is not None:
            parallel.check_batch_size(self.batch_size)
            self.progress = progress and parallel.is_root
        stream = parallel.stream if parallel is not None else lambda *key: list(key)
        self.shuffle_rng = np.random.default_rng([self.seed, 1])  # the same on every rank: the same batches
        model.set_rng(np.random.default_rng(stream(self.seed, 2)))  # dropout masks
        self.augment_rng = np.random.default_rng(stream(self.seed, 3))
        K = backends.get()
        if parallel is None and hasattr(K, "Generator"):
            # a backend with generators of its own (cuda: xoroshiro128p in device memory) draws the
            # shuffles, dropout masks and augmentations where the data is: a step copies nothing up
            self.shuffle_rng = K.Generator([self.seed, 1])
            model.set_rng(K.Generator([self.seed, 2]))
            self.augment_rng = K.Generator([self.seed, 3])
        # and keeps each step's loss there, read back every few steps (logged_step, read_losses)
        self.loss_log = K.LossLog() if parallel is None and hasattr(K, "LossLog") else None
        self.pending_losses = []       # (step, images, penalty) of the losses in loss_log not yet read
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
        self.total_steps = None        # the steps the schedule spans (set by fit)
        # the run's clock: training steps and evaluations, not compiling or checkpoint writes
        self.train_seconds, self.eval_seconds = 0.0, 0.0  # completed epochs' steps; every evaluation
        self.evaluations = []          # fit's evaluations every eval_every steps: dicts
        self.seconds_to_target = None  # the run's clock when the test accuracy first reached the target
        self.eval_every, self.target_accuracy, self.test_set = None, None, None  # fit's, for train_epoch
        # early stopping
        self.best_score, self.epochs_waited, self.best_state = math.inf, 0, None
        self.resumed = False           # fit() continues the early-stopping count of a resumed run
        self.last_checkpoint = None    # (path, epoch, step) of the last checkpoint written or resumed
        model.to_backend()

    # ------------------------------------------------------------------ one step
    def train_step(self, xb, yb, global_size=None) -> float:
        """Forward, backward and update on one batch; the loss.

        ``xb``: (N, *input_shape) images of the model's dtype; ``yb``: (N,) integer labels in
        [0, classes). Host arrays are checked in full and then put into the backend's memory;
        arrays already there (cuda's device arrays) are checked for shape and dtype only, without a
        copy back: a label out of range there makes the loss kernel's result NaN, and the loss then
        reads the labels to say so. The checks come before any kernel runs, since a compiled kernel
        indexes without bounds checks.

        In a data-parallel run ``xb`` is this rank's slice of a global batch of ``global_size``
        images (default: the slice's size times the ranks); the loss returned is the global batch's.
        """
        xb, yb = self._step_batch(xb, yb)
        logits = self.model.forward(xb, train=True)
        loss = self.loss.forward(logits, yb)
        if self.parallel is None:
            self.check_loss(loss)
        self.model.backward(self.loss.backward())
        if self.parallel is not None:  # one Allreduce: the gradients and the loss of the global batch
            n = xb.shape[0]
            loss = self.parallel.average_gradients(self.model, loss, n, global_size or n * self.parallel.size)
            self.check_loss(loss)
        return loss + self._update()

    def logged_step(self, xb, yb):
        """train_step with the loss left in the backend's memory (loss_log: cuda, one process) instead
        of read back, which would wait for the step to finish: read_losses checks and sums it later."""
        xb, yb = self._step_batch(xb, yb)
        self.loss.forward_logged(self.model.forward(xb, train=True), yb, self.loss_log)
        self.model.backward(self.loss.backward())
        self.pending_losses.append((self.optimizer.steps + 1, xb.shape[0], self._update()))

    def _step_batch(self, xb, yb):
        """A step's batch: checked, in the backend's memory, augmented; the schedule set for the step."""
        xb, yb = self._checked_batch(xb, yb)
        self.apply_schedule()
        if self.augment is not None:
            xb = self.augment(xb, self.augment_rng)
        return xb, yb

    def _update(self) -> float:
        """The step's update from the gradients of its backward pass; returns the regularizer's
        penalty (fastnn.regularization: L1, L2, ElasticNet), whose gradient joins the weights', or 0."""
        penalty = 0.0 if self.regularizer is None else self.regularizer.add_gradients(self.model)
        self.optimizer.step(self.model)
        return penalty

    def read_losses(self, loss=None):
        """Add the losses loss_log holds to the epoch's sum, in step order, as train_step's are (a
        log with none copies nothing); a loss that is not finite stops training, naming its step.
        Returns the newest loss read, else ``loss``."""
        if self.loss_log is None:
            return loss
        values, pending, self.pending_losses = self.loss_log.read(), self.pending_losses, []
        for value, (step, images, penalty) in zip(values, pending):
            loss = float(value)
            if not math.isfinite(loss):
                raise TrainingDivergedError(
                    f"the loss became {loss} at epoch {self.epoch + 1}, step {step}; it was read back after "
                    f"step {pending[-1][0]} (this backend reads the loss every {self.loss_log.capacity} steps), "
                    f"and the steps since have updated the parameters. The usual cause is a learning rate too "
                    f"large for this optimizer ({type(self.optimizer).__name__}, lr {self.optimizer.lr}): "
                    f"try a smaller --lr")
            loss += penalty
            self.epoch_loss += loss * images
        return loss

    def check_loss(self, loss):
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"the loss became {loss} at epoch {self.epoch + 1}, step {self.optimizer.steps + 1}; "
                f"the parameters are left as they were before this step. The usual cause is a learning "
                f"rate too large for this optimizer ({type(self.optimizer).__name__}, lr {self.optimizer.lr}): "
                f"try a smaller --lr")

    def apply_schedule(self):
        """Set the optimizer's rate (and momentum, where the schedule cycles it) for its next step."""
        optimizer, step = self.optimizer, self.optimizer.steps
        total = self.total_steps or step + 1  # a step outside fit: as if the run ended with it
        per_epoch = -(-self.train_size // self.batch_size) if self.train_size else total
        optimizer.lr = self.schedule.lr(step, total, per_epoch, optimizer.base_lr)
        momentum = self.schedule.momentum(step, total)
        if momentum is not None:
            optimizer.set_momentum(momentum)

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
        and rate, and the dropout and augmentation generators are then put back exactly as they
        were, through host copies (device arrays do not deep-copy)."""
        K = backends.get()
        model, optimizer = self.model, self.optimizer
        saved = (model.state_arrays(), optimizer.steps, optimizer.lr, optimizer.momentum_in_use, model.rng,
                 self.augment_rng.bit_generator.state,
                 {key: [K.to_device(K.to_host(a).copy()) for a in state] for key, state in optimizer.state.items()})
        model.set_rng(np.random.default_rng(0) if isinstance(model.rng, np.random.Generator) else K.Generator(0))
        rng = np.random.default_rng(0)
        xb = K.to_device(rng.random((self.batch_size,) + model.input_shape, dtype=np.float32).astype(model.dtype))
        yb = K.to_device(rng.integers(0, model.output_shape[0], self.batch_size))
        start = time.perf_counter()
        try:
            self.train_step(xb, yb)
            model.evaluate(K.to_host(xb), K.to_host(yb), batch_size=self.eval_batch_size)
        finally:
            arrays, optimizer.steps, optimizer.lr, optimizer.momentum_in_use, dropout_rng, augment_rng, \
                optimizer.state = saved
            self.augment_rng.bit_generator.state = augment_rng
            model.load_state_arrays(arrays)
            model.set_rng(dropout_rng)
            if self.parallel is not None:  # its Allreduce waited for the other ranks' compiling
                self.parallel.allreduce_seconds, self.parallel.allreduce_calls = 0.0, 0
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, x_dev, y_dev, n):
        """One pass over a fresh permutation of the n training images; (mean loss, seconds, images, stopped).

        A trainer resumed mid-epoch draws the same permutation again and goes on from its step.
        With fit's ``eval_every``, the test set is evaluated every that many steps (see
        evaluate_test); ``stopped`` says that one of them reached the target and ended the epoch.
        """
        K = backends.get()
        self.epoch_rng_state = self.shuffle_rng.bit_generator.state
        order = self.shuffle_rng.permutation(n)  # on cuda drawn in device memory, where gather reads it
        if self.loss_log is not None:
            self.loss_log.clear()
            self.pending_losses = []
        n_steps = -(-n // self.batch_size)
        if self.step > n_steps:
            raise ConfigError(f"this epoch is at step {self.step}, but {n} images make only {n_steps} steps "
                              f"of {self.batch_size}: resume with the training data the checkpoint was made with")
        self.train_size = n
        bar = tqdm(range(self.step, n_steps), desc=f"epoch {self.epoch + 1}", unit="batch",
                   disable=not self.progress, leave=False)
        seconds, start = self.epoch_seconds, time.perf_counter()
        stopped, loss = False, None
        for i in bar:
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.loss_log is not None:  # the loss stays on the device until the log is full, or needed
                self.logged_step(K.gather(x_dev, idx), K.gather(y_dev, idx))
                if self.loss_log.full():
                    loss = self.read_losses(loss)
            elif self.parallel is None:
                loss = self.train_step(K.gather(x_dev, idx), K.gather(y_dev, idx))
            else:  # this rank's slice of the global batch
                mine = idx[split(len(idx), self.parallel.size, self.parallel.rank)]
                loss = self.train_step(K.gather(x_dev, mine), K.gather(y_dev, mine), global_size=len(idx))
            self.step = i + 1
            if self.loss_log is None:
                self.epoch_loss += loss * len(idx)
            self.epoch_images += len(idx)
            test_kill("step", self.optimizer.steps)
            if self.finite_check_every and self.optimizer.steps % self.finite_check_every == 0:
                loss = self.read_losses(loss)
                self.check_parameters()
            if self.checkpoint_every and self.optimizer.steps % self.checkpoint_every == 0:
                loss = self.read_losses(loss)  # a checkpoint keeps the sum so far, every loss in it finite
                self.epoch_seconds = seconds + time.perf_counter() - start
                self.checkpoint()  # its write time does not count as training time
                seconds, start = self.epoch_seconds, time.perf_counter()
            if self.eval_every and self.optimizer.steps % self.eval_every == 0:
                loss = self.read_losses(loss)
                self.epoch_seconds = seconds + time.perf_counter() - start
                stopped = self.evaluate_test()  # timed on its own: the run's clock, not training time
                seconds, start = self.epoch_seconds, time.perf_counter()
                bar.set_postfix(loss=f"{loss:.4f}", test=f"{100 * self.evaluations[-1]['test_accuracy']:.2f}%")
                if stopped:
                    break
            if i % 20 == 0 and loss is not None:
                bar.set_postfix(loss=f"{loss:.4f}")
        bar.close()
        self.read_losses()
        result = self.epoch_loss / self.epoch_images, seconds + time.perf_counter() - start, self.epoch_images, stopped
        self.step, self.epoch_loss, self.epoch_images, self.epoch_seconds = 0, 0.0, 0, 0.0
        return result

    def clock(self) -> float:
        """Seconds of this run so far: training steps and evaluations, from the first step on
        (compiling and checkpoint writes left out)."""
        return self.train_seconds + self.epoch_seconds + self.eval_seconds

    def evaluate_test(self) -> bool:
        """Evaluate the test set fit was given, record it in ``evaluations``, and say whether it
        reached ``target_accuracy`` (the first time it does, ``seconds_to_target`` is set)."""
        start = time.perf_counter()
        loss, accuracy = self.evaluate(*self.test_set)
        self.eval_seconds += time.perf_counter() - start
        now = self.clock()
        reached = self.target_accuracy is not None and accuracy >= self.target_accuracy
        if reached and self.seconds_to_target is None:
            self.seconds_to_target = now
        self.evaluations.append({"step": self.optimizer.steps, "epoch": self.epoch + self.step / self.steps_per_epoch,
                                 "seconds": now, "test_loss": loss, "test_accuracy": accuracy})
        return reached

    def evaluate(self, images, labels):
        """(mean loss, accuracy) of the model on a data set; a data-parallel run's ranks share it out."""
        if self.parallel is not None:
            return self.parallel.evaluate(self.model, images, labels, self.eval_batch_size)
        return self.model.evaluate(images, labels, self.eval_batch_size)

    @property
    def augment_config(self):
        """The augmentation's settings (None: none), as checkpoints and the metrics keep them."""
        return None if self.augment is None else self.augment.config()

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.train_size // self.batch_size)

    def fit(self, x, y, epochs=1, test=None, validation=None, patience=None, monitor="val_loss",
            restore_best=True, on_epoch_end=None, eval_every=None, target_accuracy=None):
        """Train for ``epochs`` epochs; returns the list of per-epoch metric dicts.

        test / validation: (images, labels) evaluated after every epoch. Early stopping:
        with ``patience`` set, stop when ``monitor`` (val_loss, val_accuracy, test_loss or
        test_accuracy) has not improved for that many epochs, and (``restore_best``) go
        back to the best epoch's parameters. ``on_epoch_end(trainer, metrics)`` runs after
        each epoch. With ``checkpoint_path`` set, a checkpoint is written after each epoch.
        A trainer resumed mid-epoch finishes that epoch first; it counts as one of ``epochs``.

        ``eval_every``: also evaluate the test set every that many steps (``evaluations``).
        ``target_accuracy``: stop at the first evaluation (every ``eval_every`` steps, and after
        each epoch) whose test accuracy reaches it; ``seconds_to_target`` is then the run's clock.
        The schedule spans the steps this call plans (its ``epochs``, after those already done).
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
        if (eval_every is not None or target_accuracy is not None) and "test" not in sets:
            raise ConfigError("eval_every and target_accuracy evaluate the test set: pass test=(images, labels)")
        if target_accuracy is not None and not (isinstance(target_accuracy, (int, float)) and 0 < target_accuracy <= 1):
            raise ConfigError(f"target_accuracy must be a fraction in (0, 1], not {target_accuracy!r}")
        self.eval_every = None if eval_every is None else check_batch_size(eval_every, "eval_every")
        self.target_accuracy, self.test_set = target_accuracy, sets.get("test")
        if self.step and len(x) != self.train_size:
            raise ConfigError(f"this trainer stopped mid-epoch on {self.train_size} training images, not {len(x)}: "
                              f"resume with the same training data")
        self.train_size = len(x)
        if self.parallel is not None:
            self.parallel.check_epoch(self.train_size, self.batch_size)
        # the schedule's length: the steps done, the rest of an epoch under way, and the epochs to come
        epochs_to_come = int(epochs) - (1 if self.step else 0)
        self.total_steps = self.optimizer.steps + (self.steps_per_epoch - self.step if self.step else 0) \
            + max(epochs_to_come, 0) * self.steps_per_epoch
        if self.compile_seconds is None:
            self.warmup()
        K = backends.get()
        x_dev, y_dev = K.to_device(x), K.to_device(y)
        if self.parallel is None:  # the evaluation sets too, once for the whole fit (cuda: not at every evaluation)
            sets = {prefix: (K.to_device(images), K.to_device(labels)) for prefix, (images, labels) in sets.items()}
            self.test_set = sets.get("test")
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
            train_loss, seconds, n_images, reached = self.train_epoch(x_dev, y_dev, len(x))
            self.check_parameters()
            self.epoch += 1
            self.train_seconds += seconds
            metrics = {"epoch": self.epoch, "train_seconds": seconds, "images_per_second": n_images / seconds,
                       "train_loss": train_loss, "lr": self.optimizer.lr}
            start = time.perf_counter()
            for prefix, (images, labels) in sets.items():
                if prefix == "test" and reached:  # the evaluation that ended the epoch
                    loss, accuracy = self.evaluations[-1]["test_loss"], self.evaluations[-1]["test_accuracy"]
                else:
                    loss, accuracy = self.evaluate(images, labels)
                metrics[f"{prefix}_loss"], metrics[f"{prefix}_accuracy"] = loss, accuracy
            self.eval_seconds += time.perf_counter() - start
            if self.target_accuracy is not None and metrics["test_accuracy"] >= self.target_accuracy:
                reached = True
                if self.seconds_to_target is None:
                    self.seconds_to_target = self.clock()
            if reached:
                metrics["target_reached"] = True
            self.history.append(metrics)
            if on_epoch_end is not None:
                on_epoch_end(self, metrics)
            stop = reached
            if patience is not None:
                score = sign * metrics[monitor]
                if score < self.best_score:
                    self.best_score, self.epochs_waited = score, 0
                    self.best_state = model.state_arrays() if restore_best else None
                else:
                    self.epochs_waited += 1
                    if self.epochs_waited >= patience:
                        stop = metrics["early_stop"] = True
            if self.checkpoint_path is not None:
                self.checkpoint()
            if stop:
                break

    def check_parameters(self, arrays=None, consequence=""):
        """Raise TrainingDivergedError if a parameter or buffer (``arrays``: host copies; default:
        the model's own, read in place on the CPU, checked in place on cuda) is no longer finite."""
        K = backends.get()
        if arrays is None and hasattr(K, "nonfinite"):  # cuda: one flag per array comes back, not the arrays
            items = list(self.model._arrays())
            flags = K.nonfinite([table[name] for _, table, name in items])
            arrays = {key: np.array(np.nan if flag else 0.0) for (key, _, _), flag in zip(items, flags)}
        if arrays is None:
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
        self.read_losses()  # cuda: losses not read yet join the epoch's sum first (and are checked)
        model_arrays = self.model.state_arrays()
        self.check_parameters(model_arrays, ", so no checkpoint was written")
        generators = {"dropout_rng": self.model.rng.bit_generator.state,
                      "augment_rng": self.augment_rng.bit_generator.state}
        if self.parallel is not None:  # rank 0 writes the file, with every rank's generators
            rank_generators = self.parallel.gather(generators)
            if not self.parallel.is_root:
                self.last_checkpoint = (str(path), self.epoch, self.step)
                return path
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
            **generators,
            "best_score": None if math.isinf(self.best_score) else self.best_score,
            "epochs_waited": self.epochs_waited, "history": self.history,
            "regularizer": None if self.regularizer is None else repr(self.regularizer),
            "backend": K.NAME, "threads": current_threads(),
            "schedule": self.schedule.config(), "total_steps": self.total_steps,
            "label_smoothing": self.label_smoothing,
            "augment": self.augment_config,
            "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
            "evaluations": self.evaluations, "seconds_to_target": self.seconds_to_target,
            "world_size": 1 if self.parallel is None else self.parallel.size,
        }
        if self.parallel is not None and self.parallel.size > 1:
            trainer["rank_generators"] = rank_generators
        metadata = {"format": CHECKPOINT_FORMAT, "version": VERSION, "model": self.model.config(),
                    "optimizer": {**self.optimizer.config(), "steps": optimizer_state["steps"],
                                  "lr_in_use": optimizer_state["lr"]},
                    "trainer": trainer, "settings": self.settings}
        save_arrays(path, metadata, arrays)
        self.last_checkpoint = (str(path), self.epoch, self.step)
        return path

    @classmethod
    def from_checkpoint(cls, path, progress=True, checkpoint_path=None, checkpoint_every=None, regularizer=None,
                        parallel=None):
        """A trainer that continues the run saved in ``path``: its model, optimizer and settings
        are rebuilt from the file. Its ``settings`` are the ones the run was started with.
        A run with a regularizer needs the same one again (the file only names it); a data-parallel
        run needs its ``parallel`` with as many ranks as it had."""
        metadata, arrays = load_arrays(path, CHECKPOINT_FORMAT)
        model = model_from_metadata(path, metadata, arrays)
        try:
            optimizer = optim.make(**saved_optimizer_config(metadata))
            t = metadata["trainer"]
            augment = None if t.get("augment") is None else RandomAffine(**t["augment"])
            trainer = cls(model, optimizer, batch_size=t["batch_size"], seed=t["seed"], progress=progress,
                          eval_batch_size=t["eval_batch_size"], checkpoint_path=checkpoint_path,
                          checkpoint_every=checkpoint_every, settings=metadata.get("settings"),
                          regularizer=regularizer, schedule=schedules.make(**saved_schedule_config(metadata)),
                          label_smoothing=t.get("label_smoothing", 0.0), augment=augment, parallel=parallel)
        except (KeyError, TypeError, AttributeError, ConfigError) as e:
            raise CheckpointError(f"{path}: malformed trainer settings in its metadata ({e})") from e
        trainer._restore(path, metadata, arrays)
        return trainer

    def resume(self, path):
        """Continue the run saved in ``path`` with this trainer's model and optimizer, which must
        be the ones it was made with (same architecture, optimizer settings, batch size and seed)."""
        metadata, arrays = load_arrays(path, CHECKPOINT_FORMAT)
        optimizer = self.optimizer
        generators = (self.shuffle_rng, self.model.rng, self.augment_rng)
        before = (dict(vars(self)), self.model.state_arrays(), optimizer.steps, optimizer.state, optimizer.lr,
                  [g.bit_generator.state for g in generators])
        try:
            self._restore(path, metadata, arrays)
        except CheckpointError:  # a refused checkpoint leaves this trainer as it was
            attributes, model_arrays, optimizer.steps, optimizer.state, optimizer.lr, states = before
            self.__dict__.update(attributes)
            self.model.load_state_arrays(model_arrays)
            for generator, state in zip(generators, states):
                generator.bit_generator.state = state
            raise
        return self

    def _restore(self, path, metadata, arrays):
        def same(a, b):  # compare as the JSON file holds them (tuples become lists)
            return json.loads(json.dumps(a)) == b
        try:
            t = metadata["trainer"]
            if not same(self.model.config(), metadata["model"]):
                raise CheckpointError(f"{path}: its architecture differs from this model's")
            saved_optimizer = saved_optimizer_config(metadata)
            if not same(self.optimizer.config(), saved_optimizer):
                raise CheckpointError(f"{path}: its optimizer {saved_optimizer} differs from this one "
                                      f"{self.optimizer.config()}")
            mine = {"schedule": self.schedule.config(), "label_smoothing": self.label_smoothing,
                    "augment": self.augment_config}
            saved = {"schedule": saved_schedule_config(metadata), "label_smoothing": t.get("label_smoothing", 0.0),
                     "augment": t.get("augment")}
            for name in mine:
                if not same(mine[name], saved[name]):
                    raise CheckpointError(f"{path}: the run used {name} {saved[name]}, this trainer {mine[name]}")
            mine = None if self.regularizer is None else repr(self.regularizer)
            if t.get("regularizer") != mine:
                raise CheckpointError(f"{path}: the run used regularizer {t.get('regularizer')}, this trainer {mine}")
            saved_size, size = t.get("world_size", 1), 1 if self.parallel is None else self.parallel.size
            if saved_size != size:
                raise CheckpointError(
                    f"{path}: the run was trained on {saved_size} rank(s), this one has {size}. A resumed run "
                    f"needs the same number (each rank's slice of a batch and its dropout stream depend on it): "
                    + (f"mpiexec -n {saved_size} fastnn train --distributed --resume {path}" if saved_size > 1
                       else f"fastnn train --resume {path}, without mpiexec"))
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
            mine = t["rank_generators"][self.parallel.rank] if saved_size > 1 else t
            self.model.rng.bit_generator.state = mine["dropout_rng"]
            if "augment_rng" in mine:
                self.augment_rng.bit_generator.state = mine["augment_rng"]
            self.total_steps = t.get("total_steps")
            self.train_seconds, self.eval_seconds = float(t.get("train_seconds", 0)), float(t.get("eval_seconds", 0))
            self.evaluations = list(t.get("evaluations", []))
            self.seconds_to_target = t.get("seconds_to_target")
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


def saved_optimizer_config(metadata) -> dict:
    """The optimizer settings a checkpoint holds (optim.make's arguments); files from before
    schedules kept a per-epoch decay there ("lr_decay"), which saved_schedule_config reads."""
    return {k: v for k, v in metadata["optimizer"].items() if k not in OPTIMIZER_STATE + ("lr_decay",)}


def saved_schedule_config(metadata) -> dict:
    """The schedule a checkpoint's run used (schedules.make's arguments)."""
    saved = metadata["trainer"].get("schedule")
    if saved is not None:
        return saved
    gamma = metadata["optimizer"].get("lr_decay", 1.0)  # a file from before schedules
    return schedules.Constant().config() if gamma == 1 else schedules.Step(gamma=gamma).config()
