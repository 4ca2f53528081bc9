"""Chapter 5: the gradient check. Backpropagation is fast but easy to get wrong; numerical
gradients (central differences) are slow but hard to get wrong. Comparing the two on a
small network checks every layer's backward pass at once.

fastnn.gradient_check(model, x, t) runs the comparison on a float64 copy of the model on
the NumPy reference backend (so it is the same whichever backend is active) and returns
the relative error ||backprop - numerical|| / (||backprop|| + ||numerical||) for every
parameter and for the input (below a floor of 1e-4 the difference counts absolutely, so a
gradient that is truly zero, like a conv bias's in front of BatchNorm, is no false alarm).
In float64 a correct backward pass gives about 1e-7 or less.

    python examples/gradient_check.py
"""
import numpy as np

import fastnn


def small_cnn(seed=0):
    """Conv2D -> BatchNorm -> ReLU -> MaxPool2D -> Flatten -> Dense -> BatchNorm -> ReLU ->
    Dropout -> Dense on 1x8x8 images: every kind of layer a CNN here uses, small enough that
    the numerical gradient (two forward passes per number) takes well under a second."""
    rng = np.random.default_rng(seed)
    layers = [
        fastnn.Conv2D(1, 3, 3, pad=1, rng=rng), fastnn.BatchNorm(3), fastnn.ReLU(), fastnn.MaxPool2D(2),
        fastnn.Flatten(), fastnn.Dense(3 * 4 * 4, 10, rng=rng), fastnn.BatchNorm(10), fastnn.ReLU(),
        fastnn.Dropout(0.3), fastnn.Dense(10, 4, rng=rng),
    ]
    return fastnn.Sequential(layers, input_shape=(1, 8, 8), name="gradcheck-cnn", rng=rng)


def check_small_cnn(seed=0, batch=5):
    """The relative errors of fastnn.gradient_check on small_cnn with random images and labels."""
    rng = np.random.default_rng(seed + 1)
    model = small_cnn(seed)
    x = rng.standard_normal((batch,) + model.input_shape).astype(np.float32)
    t = rng.integers(0, model.output_shape[0], batch)
    return fastnn.gradient_check(model, x, t)


def main():
    model = small_cnn()
    print(model.summary())
    errors = check_small_cnn()
    print("relative error, backprop vs numerical gradient:")
    for key, error in errors.items():
        if key != "max":
            print(f"  {key:8s} {error:.2e}")
    print(f"largest: {errors['max']:.2e} ({'pass' if errors['max'] < 1e-6 else 'FAIL'}: below 1e-6)")


if __name__ == "__main__":
    main()
