"""Weight initialisers. Every one returns float32 drawn from the given numpy Generator.

``fan_in`` is the number of inputs each output unit sees: D for a dense layer, C*KH*KW
for a convolution.
"""
import numpy as np

from .errors import ConfigError


def normal(shape, std, rng):
    """N(0, std^2): the textbook's ``weight_init_std * np.random.randn``."""
    return (std * rng.standard_normal(shape)).astype(np.float32)


def xavier(shape, fan_in, rng):
    """std = sqrt(1 / fan_in): keeps sigmoid/tanh activations spread out (Glorot & Bengio)."""
    return normal(shape, np.sqrt(1.0 / fan_in), rng)


def he(shape, fan_in, rng):
    """std = sqrt(2 / fan_in): compensates for ReLU zeroing half its inputs (He et al.)."""
    return normal(shape, np.sqrt(2.0 / fan_in), rng)


def weights(shape, fan_in, scheme, rng):
    """Initialise by name ('he', 'xavier') or by a number, the std of a plain normal."""
    if scheme == "he":
        return he(shape, fan_in, rng)
    if scheme == "xavier":
        return xavier(shape, fan_in, rng)
    if isinstance(scheme, (int, float)) and not isinstance(scheme, bool) and scheme > 0:
        return normal(shape, float(scheme), rng)
    raise ConfigError(f"unknown weight initialisation {scheme!r}: use 'he', 'xavier' or a positive std")
