"""Numerical gradients and the gradient check: backprop compared with central differences."""
import copy

import numpy as np

from . import backends
from .layers import Dropout
from .losses import SoftmaxCrossEntropy


def numerical_gradient(f, x, eps=1e-4):
    """Central differences (f(x + h) - f(x - h)) / 2h, one element of x at a time.

    ``f(x)`` returns a number; x is changed in place while probing and restored after.
    """
    grad = np.zeros_like(x)
    with np.nditer(x, flags=["multi_index"], op_flags=["readwrite"]) as it:
        for value in it:
            index = it.multi_index
            original = float(value)
            x[index] = original + eps
            above = f(x)
            x[index] = original - eps
            below = f(x)
            x[index] = original
            grad[index] = (above - below) / (2 * eps)
    return grad


def relative_error(analytic, numeric, floor=1e-4):
    """||a - n|| / max(||a|| + ||n||, floor): 0 when they agree; about 1e-7 is a pass in float64.

    The floor keeps a gradient that is truly zero from scoring as a total mismatch: a conv
    bias followed by BatchNorm has gradient exactly 0, backprop gives round-off (1e-17) and
    the differences give 0, which is ||a - n|| / ||a|| = 1 without it. Below the floor the
    difference is measured absolutely, in units of the floor.
    """
    scale = max(np.linalg.norm(analytic) + np.linalg.norm(numeric), floor)
    return float(np.linalg.norm(analytic - numeric) / scale)


def gradient_check(model, x, t, loss=None, eps=1e-5, check_input=True):
    """Compare backprop with numerical gradients for every parameter (and the input) of ``model``.

    Runs on a float64 copy on the numpy reference backend, so ``model`` is left untouched.
    Dropout masks are frozen at their first draw so every probe sees the same network.
    Returns {"0.W": error, ..., "input": error, "max": largest error}.
    """
    previous = backends.get()
    backends.use("numpy")
    try:
        model = copy.deepcopy(model).astype(np.float64)
        for layer in model.layers:
            if hasattr(layer, "need_dx"):
                layer.need_dx = True
        loss = loss if loss is not None else SoftmaxCrossEntropy()
        x = np.array(x, dtype=np.float64)
        t = np.array(t, dtype=np.float64) if np.asarray(t).dtype.kind == "f" else np.asarray(t)

        def value(_=None):
            return loss.forward(model.forward(x, train=True), t)

        value()
        for layer in model.layers:
            if isinstance(layer, Dropout) and layer.mask is not None:
                layer.fixed_mask = layer.mask
        value()
        dx = model.backward(loss.backward())
        errors = {key: relative_error(grad, numerical_gradient(value, param, eps))
                  for key, param, grad in model.param_items()}
        if check_input:
            errors["input"] = relative_error(dx, numerical_gradient(value, x, eps))
        errors["max"] = max(errors.values())
        return errors
    finally:
        backends._active = previous
