"""Weight penalties: L1, L2 and elastic net, added to the loss and to the gradients.

    regularizer = L2(1e-4)
    trainer = Trainer(model, SGD(lr=0.1), regularizer=regularizer)   # or by hand:

    loss = loss_layer.forward(model.forward(x), t)
    model.backward(loss_layer.backward())
    loss += regularizer.add_gradients(model)     # the penalty's gradient joins each dW
    optimizer.step(model)

As in the textbook, only weights are penalised (keys ending in ".W": Dense and Conv2D),
not biases or BatchNorm's gamma and beta; ``weights_only=False`` includes every parameter.

    L1(lam)          lam * sum |W|                    gradient lam * sign(W)
    L2(lam)          lam / 2 * sum W^2                gradient lam * W   (= the optimizers' weight_decay)
    ElasticNet(l1, l2)  the two together

How the arrays are reached (every backend): the gradient is added in place by the backend's
own ``sgd_update`` kernel, which computes ``param -= lr * grad``; called as
``sgd_update(dW, g, lr=-1)`` it is ``dW += g``, in the backend's memory, so the update
never leaves the device. L2's g is the weight array itself (``sgd_update(dW, W, lr=-lam)``).
The penalty's value, and L1's sign(W), are computed with NumPy on ``K.to_host(W)``: free on
the CPU backends (it is the same array), one copy per weight array per step on cuda.
"""
import numpy as np

from . import backends
from .errors import ConfigError


def _strength(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
        raise ConfigError(f"{owner}: {name} must be a number >= 0, not {value!r}")
    return float(value)


class Penalty:
    """Base class: ``penalty(model) -> float`` and ``add_gradients(model) -> float`` (the same value)."""

    def __init__(self, weights_only=True):
        self.weights_only = weights_only

    def penalised(self, model):
        """[(key, parameter, gradient or None)] of the parameters this penalty covers."""
        return [(key, param, grad) for key, param, grad in model.param_items()
                if not self.weights_only or key.endswith(".W")]

    def value(self, w):
        """The penalty of one host array (float64 sums)."""
        raise NotImplementedError

    def add_gradient(self, K, param, grad, w):
        """grad += d penalty / d param, in place in the backend's memory; w is param on the host."""
        raise NotImplementedError

    def penalty(self, model) -> float:
        K = backends.get()
        return float(sum(self.value(K.to_host(param)) for _, param, _ in self.penalised(model)))

    def add_gradients(self, model) -> float:
        """Add the penalty's gradient to the gradients of the last backward pass; returns the penalty."""
        K = backends.get()
        total = 0.0
        for key, param, grad in self.penalised(model):
            if grad is None:
                raise ConfigError(f"{type(self).__name__}: parameter {key} has no gradient yet; "
                                  f"call model.backward(...) before add_gradients(model)")
            w = K.to_host(param)
            total += self.value(w)
            self.add_gradient(K, param, grad, w)
        return total

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class L1(Penalty):
    """lam * sum |W|; its gradient lam * sign(W) pushes every weight towards 0 by the same
    amount, so weights that matter little end at exactly (or nearly) 0: sparse weights."""

    def __init__(self, lam, weights_only=True):
        super().__init__(weights_only)
        self.lam = _strength("L1", "lam", lam)

    def value(self, w):
        return self.lam * float(np.abs(w).sum(dtype=np.float64))

    def add_gradient(self, K, param, grad, w):
        # grad += lam * sign(W)
        K.sgd_update(grad, K.to_device(np.sign(w).astype(w.dtype)), lr=-self.lam)


class L2(Penalty):
    """lam / 2 * sum W^2 (weight decay); its gradient lam * W shrinks big weights most."""

    def __init__(self, lam, weights_only=True):
        super().__init__(weights_only)
        self.lam = _strength("L2", "lam", lam)

    def value(self, w):
        return 0.5 * self.lam * float(np.square(w, dtype=np.float64).sum())

    def add_gradient(self, K, param, grad, w):
        # grad += lam * W
        K.sgd_update(grad, param, lr=-self.lam)


class ElasticNet(Penalty):
    """l1 * sum |W| + l2 / 2 * sum W^2: L1's sparsity with L2's grouping of related weights."""

    def __init__(self, l1, l2, weights_only=True):
        super().__init__(weights_only)
        self.l1 = _strength("ElasticNet", "l1", l1)
        self.l2 = _strength("ElasticNet", "l2", l2)

    def value(self, w):
        return (self.l1 * float(np.abs(w).sum(dtype=np.float64))
                + 0.5 * self.l2 * float(np.square(w, dtype=np.float64).sum()))

    def add_gradient(self, K, param, grad, w):
        # grad += l1 * sign(W) + l2 * W
        K.sgd_update(grad, K.to_device(np.sign(w).astype(w.dtype)), lr=-self.l1)
        K.sgd_update(grad, param, lr=-self.l2)
