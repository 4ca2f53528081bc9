"""Chapter 4: the numerical gradient, and gradient descent with it.

    f(x0, x1) = x0^2 + x1^2

The gradient by central differences, (f(x + h) - f(x - h)) / 2h one coordinate at a time,
is fastnn.numerical_gradient (the gradient check uses it too). Walking against it,
x <- x - lr * grad f(x), from (-3, 4) with lr 0.1 reaches the minimum (0, 0) in 100 steps.
Too large a rate (10) overshoots and blows up; too small (1e-10) barely moves.

    python examples/gradient_descent.py [--plot descent.png]
"""
import argparse

import numpy as np

import fastnn
from fastnn.plot import require_matplotlib


def function_2(x):
    return x[0] ** 2 + x[1] ** 2


def gradient_descent(f, init_x, lr=0.1, step_num=100):
    """(the final x, the path: every x visited, (step_num + 1, len(x)))."""
    x = np.array(init_x, dtype=np.float64)
    path = [x.copy()]
    for _ in range(step_num):
        grad = fastnn.numerical_gradient(f, x)
        x -= lr * grad
        path.append(x.copy())
    return x, np.array(path)


def plot_path(path, filename):
    """The path drawn over the contour lines of f, with the downhill direction -grad f as arrows."""
    plt = require_matplotlib()
    x0, x1 = np.meshgrid(np.linspace(-4.5, 4.5, 200), np.linspace(-4.5, 4.5, 200))
    fig, ax = plt.subplots(figsize=(6, 6))
    contours = ax.contour(x0, x1, x0 ** 2 + x1 ** 2, levels=[0.5, 2, 4.5, 8, 12.5, 18, 24.5], colors="0.7")
    ax.clabel(contours, fontsize=8)
    g0, g1 = np.meshgrid(np.linspace(-4, 4, 9), np.linspace(-4, 4, 9))
    ax.quiver(g0, g1, -2 * g0, -2 * g1, color="0.85", angles="xy")
    ax.plot(path[:, 0], path[:, 1], "o-", color="tab:blue", markersize=4, label="gradient descent, lr 0.1")
    ax.plot(*path[0], "s", color="tab:red", markersize=8, label=f"start ({path[0, 0]:g}, {path[0, 1]:g})")
    ax.plot(0, 0, "*", color="black", markersize=12, label="minimum (0, 0)")
    ax.set(xlabel="$x_0$", ylabel="$x_1$", xlim=(-4.5, 4.5), ylim=(-4.5, 4.5), aspect="equal",
           title="$f(x_0, x_1) = x_0^2 + x_1^2$: 100 steps from (-3, 4)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(filename, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", metavar="PNG", help="draw the path over the contours of f")
    args = parser.parse_args(argv)

    print("numerical gradient of x0^2 + x1^2:")
    for point in ([3.0, 4.0], [0.0, 2.0], [3.0, 0.0]):
        print(f"  at {tuple(point)}: {fastnn.numerical_gradient(function_2, np.array(point))}")
    for lr in (0.1, 10.0, 1e-10):
        x, _ = gradient_descent(function_2, [-3.0, 4.0], lr=lr, step_num=100)
        print(f"gradient descent from (-3, 4), lr {lr:g}, 100 steps: x = {x}")
    if args.plot:
        _, path = gradient_descent(function_2, [-3.0, 4.0], lr=0.1, step_num=100)
        plot_path(path, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
