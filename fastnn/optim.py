"""Optimizers: each step calls one in-place backend kernel per parameter.

The formulas are PyTorch's (see fastnn/backends/numpy/optim.py); weight decay is L2
added to the gradient. State arrays live in the backend's memory, one list per parameter.
"""
import numpy as np

from . import backends
from .errors import CheckpointError, ConfigError


def _real(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and bool(np.isfinite(value))


def _fraction(owner, name, value, high_inclusive=False):
    """A hyperparameter in [0, 1) (or [0, 1]): momentum, betas, decay rates."""
    if not (_real(value) and 0 <= value and (value <= 1 if high_inclusive else value < 1)):
        raise ConfigError(f"{owner}: {name} must be a number in [0, 1{']' if high_inclusive else ')'}, "
                          f"not {value!r}")
    return float(value)


def _positive(owner, name, value):
    if not (_real(value) and value > 0):
        raise ConfigError(f"{owner}: {name} must be a positive number, not {value!r}")
    return float(value)


class Optimizer:
    kernel = ""        # the backend kernel that updates one parameter
    n_state = 0        # state arrays per parameter
    default_lr = 0.01

    def __init__(self, lr=None, weight_decay=0.0):
        lr = self.default_lr if lr is None else lr
        if not (_real(lr) and lr > 0):
            raise ConfigError(f"{type(self).__name__}: the learning rate must be a positive number, not {lr!r}")
        if not (_real(weight_decay) and weight_decay >= 0):
            raise ConfigError(f"{type(self).__name__}: weight_decay must be >= 0, not {weight_decay!r}")
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.base_lr = self.lr  # the configured rate; self.lr is the one in use (a schedule sets it)
        self.momentum_in_use = None  # a schedule that cycles the momentum sets it (see set_momentum)
        self.steps = 0
        self.state = {}  # parameter key -> [state arrays]

    momentum_name = None  # the hyperparameter a one-cycle schedule may cycle ("momentum", "beta1")

    def set_momentum(self, value):
        """Use ``value`` for the momentum (Adam's beta1) from the next step on; the configured one
        stays in config()."""
        if self.momentum_name is None:
            raise ConfigError(f"{type(self).__name__} has no momentum to cycle: use momentum, nesterov or adam")
        self.momentum_in_use = _fraction(type(self).__name__, self.momentum_name, value)

    def _momentum(self):
        return getattr(self, self.momentum_name) if self.momentum_in_use is None else self.momentum_in_use

    def hyper(self) -> dict:
        """The kernel's keyword arguments besides param, grad, state, lr and weight decay."""
        return {}

    def step(self, model):
        """Update every parameter of ``model`` from the gradients of its last backward pass."""
        K = backends.get()
        self.steps += 1
        update = getattr(K, self.kernel)
        hyper = self.hyper()
        for key, param, grad in model.param_items():
            state = self.state.get(key)
            if state is None:
                state = self.state[key] = [K.zeros(param.shape, dtype=param.dtype) for _ in range(self.n_state)]
            update(param, grad, *state, lr=self.lr, weight_decay=self.weight_decay, **hyper)

    def state_dict(self) -> dict:
        """Host copies of the state, for checkpoints: {"steps": int, "lr": the rate in use (scheduled),
        "arrays": {"key/i": array}}."""
        K = backends.get()
        arrays = {f"{key}/{i}": K.to_host(a) for key, state in self.state.items() for i, a in enumerate(state)}
        return {"steps": self.steps, "lr": self.lr, "arrays": arrays}

    def load_state_dict(self, state, model):
        """Set the state from ``state_dict()``'s layout; every array must belong to one of ``model``'s parameters."""
        K = backends.get()
        steps = state["steps"]
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise CheckpointError(f"optimizer step count must be a whole number >= 0, not {steps!r}")
        lr = state.get("lr", self.base_lr)  # files from before the rate in use was saved: the configured one
        if not (_real(lr) and lr > 0):
            raise CheckpointError(f"optimizer learning rate must be a positive number, not {lr!r}")
        arrays = state["arrays"]
        known = {f"{key}/{i}" for key, _, _ in model.param_items() for i in range(self.n_state)}
        unexpected = sorted(set(arrays) - known)
        if unexpected:
            raise CheckpointError(f"optimizer state {unexpected} belongs to no parameter of this "
                                  f"{type(self).__name__} and model")
        state = {}  # built aside: refused state leaves the optimizer as it was
        for key, param, _ in model.param_items():
            names = [f"{key}/{i}" for i in range(self.n_state)]
            if not all(n in arrays for n in names):
                if steps and self.n_state:
                    raise CheckpointError(f"optimizer state for parameter {key} is missing from the checkpoint")
                continue
            if any(arrays[n].shape != tuple(param.shape) for n in names):
                raise CheckpointError(f"optimizer state for parameter {key} has the wrong shape")
            state[key] = [K.to_device(np.ascontiguousarray(arrays[n], dtype=param.dtype)) for n in names]
        self.steps, self.state, self.lr = int(steps), state, float(lr)

    def config(self) -> dict:
        """The settings it was made with (the configured lr and momentum; the scheduled ones are state)."""
        config = dict(name=NAME_OF[type(self)], lr=self.base_lr, weight_decay=self.weight_decay, **self.hyper())
        if self.momentum_name:
            config[self.momentum_name] = getattr(self, self.momentum_name)
        return config


class SGD(Optimizer):
    kernel, n_state, default_lr = "sgd_update", 0, 0.01


class Momentum(Optimizer):
    kernel, n_state, default_lr = "momentum_update", 1, 0.01
    momentum_name = "momentum"

    def __init__(self, lr=None, weight_decay=0.0, momentum=0.9):
        super().__init__(lr, weight_decay)
        self.momentum = _fraction(type(self).__name__, "momentum", momentum)

    def hyper(self):
        return dict(momentum=self._momentum())


class Nesterov(Momentum):
    kernel = "nesterov_update"


class AdaGrad(Optimizer):
    kernel, n_state, default_lr = "adagrad_update", 1, 0.01

    def __init__(self, lr=None, weight_decay=0.0, eps=1e-10):
        super().__init__(lr, weight_decay)
        self.eps = _positive("AdaGrad", "eps", eps)

    def hyper(self):
        return dict(eps=self.eps)


class RMSprop(Optimizer):
    kernel, n_state, default_lr = "rmsprop_update", 1, 0.001

    def __init__(self, lr=None, weight_decay=0.0, alpha=0.99, eps=1e-8):
        super().__init__(lr, weight_decay)
        self.alpha, self.eps = _fraction("RMSprop", "alpha", alpha), _positive("RMSprop", "eps", eps)

    def hyper(self):
        return dict(alpha=self.alpha, eps=self.eps)


class Adadelta(Optimizer):
    kernel, n_state, default_lr = "adadelta_update", 2, 1.0

    def __init__(self, lr=None, weight_decay=0.0, rho=0.9, eps=1e-6):
        super().__init__(lr, weight_decay)
        self.rho, self.eps = _fraction("Adadelta", "rho", rho, high_inclusive=True), _positive("Adadelta", "eps", eps)

    def hyper(self):
        return dict(rho=self.rho, eps=self.eps)


class Adam(Optimizer):
    kernel, n_state, default_lr = "adam_update", 2, 0.001
    momentum_name = "beta1"

    def __init__(self, lr=None, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr, weight_decay)
        self.beta1, self.beta2 = _fraction("Adam", "beta1", beta1), _fraction("Adam", "beta2", beta2)
        self.eps = _positive("Adam", "eps", eps)

    def hyper(self):
        # the bias correction needs the step number (counted from 1)
        return dict(beta1=self._momentum(), beta2=self.beta2, eps=self.eps, step=max(self.steps, 1))

    def config(self):
        config = super().config()
        del config["step"]
        return config


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad,
              "rmsprop": RMSprop, "adadelta": Adadelta, "adam": Adam}
NAME_OF = {cls: name for name, cls in OPTIMIZERS.items()}


def make(name, lr=None, weight_decay=0.0, betas=None, **hyper):
    """An optimizer by name; ``lr=None`` takes the optimizer's usual default. ``betas=(beta1, beta2)``
    (PyTorch's spelling) is the same as beta1=..., beta2=... for adam. The rate's course over the
    run is a schedule's business (fastnn.schedules, Trainer(schedule=...))."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    if betas is not None:
        if name != "adam":
            raise ConfigError(f"optimizer {name!r} has no betas (adam has)")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ConfigError(f"adam: betas must be two numbers (beta1, beta2), not {betas!r}")
        hyper.update(beta1=betas[0], beta2=betas[1])
    try:
        return OPTIMIZERS[name](lr=lr, weight_decay=weight_decay, **hyper)
    except TypeError as e:  # a keyword this optimizer does not have
        raise ConfigError(f"optimizer {name!r}: {e}") from e
