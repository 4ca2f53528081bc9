"""Chapter 2: the perceptron.

A perceptron fires (outputs 1) when the weighted sum of its inputs plus a bias is positive:

    output = 1 if w . x + b > 0 else 0

AND, NAND and OR are perceptrons with hand-picked weights; XOR is not (no straight line
separates its 1s from its 0s), but two layers of them make it: XOR(x) = AND(NAND(x), OR(x)).
The perceptron learning rule finds weights for AND and OR from their truth tables, and
never for XOR.

    python examples/perceptron.py

Plain NumPy: this comes before fastnn's layers.
"""
import numpy as np

INPUTS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)
TRUTH_TABLES = {
    "AND": np.array([0, 0, 0, 1]),
    "NAND": np.array([1, 1, 1, 0]),
    "OR": np.array([0, 1, 1, 1]),
    "XOR": np.array([0, 1, 1, 0]),
}


def perceptron(x, w, b):
    """1 if w . x + b > 0 else 0."""
    return 1 if np.dot(w, x) + b > 0 else 0


def AND(x1, x2):
    return perceptron(np.array([x1, x2]), w=np.array([0.5, 0.5]), b=-0.7)


def NAND(x1, x2):
    return perceptron(np.array([x1, x2]), w=np.array([-0.5, -0.5]), b=0.7)


def OR(x1, x2):
    return perceptron(np.array([x1, x2]), w=np.array([0.5, 0.5]), b=-0.2)


def XOR(x1, x2):
    """Two layers: NAND and OR side by side, then AND of their outputs."""
    s1 = NAND(x1, x2)
    s2 = OR(x1, x2)
    return AND(s1, s2)


GATES = {"AND": AND, "NAND": NAND, "OR": OR, "XOR": XOR}


def learn(inputs, targets, epochs=100):
    """The perceptron learning rule (Rosenblatt).

    With the target as a sign y = +1 (fire) or -1 (stay quiet), every misclassified
    example moves the line towards it: w += y x, b += y. Returns (w, b, history) where
    history[i] is how many of the examples epoch i ended with right; it stops early once
    all are right.
    """
    w, b = np.zeros(inputs.shape[1]), 0.0
    history = []
    for _ in range(epochs):
        for x, target in zip(inputs, targets):
            if perceptron(x, w, b) != target:
                y = 1 if target == 1 else -1
                w += y * x
                b += y
        correct = sum(perceptron(x, w, b) == target for x, target in zip(inputs, targets))
        history.append(int(correct))
        if correct == len(targets):
            break
    return w, b, history


def main():
    print("gates with fixed weights:")
    print("x1 x2 | " + " ".join(f"{name:>4}" for name in GATES))
    for x1, x2 in INPUTS.astype(int):
        print(f" {x1}  {x2} | " + " ".join(f"{gate(x1, x2):>4}" for gate in GATES.values()))

    print("\nthe perceptron learning rule (at most 100 epochs):")
    for name in ("AND", "OR", "XOR"):
        w, b, history = learn(INPUTS, TRUTH_TABLES[name], epochs=100)
        verdict = (f"learned in {len(history)} epochs: w = {w}, b = {b:+.0f}" if history[-1] == 4
                   else f"never separable: best {max(history)}/4 right in {len(history)} epochs")
        print(f"  {name:4}: {verdict}")


if __name__ == "__main__":
    main()
