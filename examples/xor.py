"""Chapter 5: XOR, which no single perceptron computes, learned by backpropagation.

Two small networks, each trained on the four rows of the truth table with full-batch
gradient descent (every step: forward, loss, backward, update):

* 2-4-1 with Sigmoid units and the mean squared error: the output is XOR itself;
* 2-4-2 with Tanh units and softmax cross-entropy: two classes, the answer is the argmax.

    python examples/xor.py
"""
import numpy as np

import fastnn

X = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
XOR = np.array([0, 1, 1, 0])


def sigmoid_mse_net(seed=0):
    rng = np.random.default_rng(seed)
    return fastnn.Sequential([fastnn.Dense(2, 4, init="xavier", rng=rng), fastnn.Sigmoid(),
                              fastnn.Dense(4, 1, init="xavier", rng=rng), fastnn.Sigmoid()],
                             input_shape=(2,), name="xor-sigmoid-mse")


def tanh_softmax_net(seed=0):
    rng = np.random.default_rng(seed)
    return fastnn.Sequential([fastnn.Dense(2, 4, init="xavier", rng=rng), fastnn.Tanh(),
                              fastnn.Dense(4, 2, init="xavier", rng=rng)],
                             input_shape=(2,), name="xor-tanh-softmax")


def train(model, loss, targets, optimizer, steps):
    """Full-batch training on the truth table; returns the loss before every step."""
    K = fastnn.backends.get()
    x, t = K.to_device(X), K.to_device(targets)
    losses = []
    for _ in range(steps):
        losses.append(loss.forward(model.forward(x), t))
        model.backward(loss.backward())
        optimizer.step(model)
    return losses


def learn_xor_sigmoid_mse(seed=0, steps=2000):
    """(outputs in [0, 1] for the four rows, loss history)."""
    model = sigmoid_mse_net(seed)
    losses = train(model, fastnn.MeanSquaredError(), XOR.reshape(4, 1).astype(np.float32),
                   fastnn.SGD(lr=2.0), steps)
    K = fastnn.backends.get()
    return K.to_host(model.forward(K.to_device(X), train=False)).ravel(), losses


def learn_xor_tanh_softmax(seed=0, steps=500):
    """(predicted class for the four rows, class-1 probability, loss history)."""
    model = tanh_softmax_net(seed)
    losses = train(model, fastnn.SoftmaxCrossEntropy(), XOR.astype(np.int64), fastnn.SGD(lr=0.5), steps)
    K = fastnn.backends.get()
    logits = K.to_host(model.forward(K.to_device(X), train=False)).astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return logits.argmax(axis=1), p[:, 1], losses


def show_losses(losses, every):
    for step in range(0, len(losses), every):
        print(f"  step {step:5d}: loss {losses[step]:.5f}")
    print(f"  step {len(losses) - 1:5d}: loss {losses[-1]:.5f}")


def main():
    print("2-4-1, Sigmoid, mean squared error, SGD lr 2.0:")
    y, losses = learn_xor_sigmoid_mse()
    show_losses(losses, every=400)
    for x, out in zip(X.astype(int), y):
        print(f"  XOR({x[0]}, {x[1]}) -> {out:.3f} -> {round(float(out))}")

    print("2-4-2, Tanh, softmax cross-entropy, SGD lr 0.5:")
    labels, p1, losses = learn_xor_tanh_softmax()
    show_losses(losses, every=100)
    for x, label, p in zip(X.astype(int), labels, p1):
        print(f"  XOR({x[0]}, {x[1]}) -> P(1) = {p:.3f} -> {label}")


if __name__ == "__main__":
    main()
