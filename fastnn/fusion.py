"""The plan Sequential runs: its layers, with each fusable chain grouped into one block.

    Conv2D -> ReLU -> MaxPool2D(2)   one call to conv2d_relu_pool_forward / _backward
    Conv2D -> ReLU                   one call to conv2d_relu_forward / _backward
    Dense  -> ReLU                   one call to dense_relu_forward / _backward
    any other layer                  runs alone, as written

(the way oneDNN attaches post-ops to a convolution and PyTorch's fuse_modules groups
conv-bn-relu). A fused kernel computes its chain in one pass, in one parallel region, without
writing the intermediate activations to memory; its result is the chain's
(fastnn/backends/composed.py is the specification, and the tests hold every backend to it).

The layer list stays the model's definition: ``model.layers``, parameters, gradients, saved
files and checkpoints are the same whether the plan fuses or not. A block reads its layers'
parameters and writes their gradients. Fusion is on by default; FASTNN_FUSION=0 (config.py)
or ``Sequential(..., fuse=False)`` runs every layer on its own, one kernel each, which is what
the textbook shows and what a debugger steps through.
"""
from . import backends
from .layers import Conv2D, Dense, MaxPool2D, ReLU


class Step:
    """One layer run on its own."""
    kernel = None

    def __init__(self, *layers):
        self.layers = layers

    def forward(self, x, train=True):
        return self.layers[0].forward(x, train)

    def backward(self, dy):
        return self.layers[0].backward(dy)

    def __repr__(self):
        return " + ".join(type(layer).__name__ for layer in self.layers) + (f"  [{self.kernel}]" if self.kernel else "")


class _Fused(Step):
    """A chain whose first layer has the parameters and whose last produces the output."""

    def _begin(self, x, train):
        """Check x against the first layer and record every layer's output shape, so a wrong
        gradient is refused naming the layer, exactly as when the layers run alone."""
        first = self.layers[0]
        first.check_input(x)
        shape = first.y_shape
        for layer in self.layers[1:]:
            shape = (shape[0],) + layer.output_shape(shape[1:])
            layer.y_shape = shape
        for layer in self.layers:
            layer.kept_state = False  # the block keeps the state: a layer alone cannot go back
        self.kept_state = train
        self.y_shape = shape

    def _check_grad(self, dy):
        last = self.layers[-1]
        last.kept_state = self.kept_state  # so the last layer's message explains what is wrong
        try:
            last._expect_grad(dy)
        finally:
            last.kept_state = False


class FusedConv(_Fused):
    """Conv2D -> ReLU (-> MaxPool2D 2x2): one conv2d_relu[_pool] kernel each way."""

    def __init__(self, *layers):
        super().__init__(*layers)
        self.kernel = "conv2d_relu_pool" if len(layers) == 3 else "conv2d_relu"

    def forward(self, x, train=True):
        conv = self.layers[0]
        self._begin(x, train)
        y, cache = getattr(backends.get(), self.kernel + "_forward")(
            x, conv.params["W"], conv.params["b"], conv.stride, conv.pad)
        self.cache = cache if train else None
        return y

    def backward(self, dy):
        self._check_grad(dy)
        conv = self.layers[0]
        dx, conv.grads["W"], conv.grads["b"] = getattr(backends.get(), self.kernel + "_backward")(
            dy, self.cache, need_dx=conv.need_dx)
        return dx


class FusedDense(_Fused):
    """Dense -> ReLU: one dense_relu kernel each way."""
    kernel = "dense_relu"

    def forward(self, x, train=True):
        dense = self.layers[0]
        self._begin(x, train)
        y = backends.get().dense_relu_forward(x, dense.params["W"], dense.params["b"])
        self.x, self.y = (x, y) if train else (None, None)
        return y

    def backward(self, dy):
        self._check_grad(dy)
        dense = self.layers[0]
        dx, dense.grads["W"], dense.grads["b"] = backends.get().dense_relu_backward(
            dy, self.x, dense.params["W"], self.y, need_dx=dense.need_dx)
        return dx


def _is_fusable_pool(layer):
    return isinstance(layer, MaxPool2D) and (layer.size, layer.stride, layer.pad) == (2, 2, 0)


def plan(layers, fuse=True) -> list:
    """The steps that run ``layers``: fusable chains grouped (if ``fuse``), the rest alone."""
    steps, i = [], 0
    while i < len(layers):
        here = layers[i:i + 3]
        chain = 1
        if fuse and len(here) >= 2 and isinstance(here[1], ReLU):
            if isinstance(here[0], Conv2D):
                chain = 3 if len(here) == 3 and _is_fusable_pool(here[2]) else 2
                steps.append(FusedConv(*here[:chain]))
            elif isinstance(here[0], Dense):
                chain = 2
                steps.append(FusedDense(*here[:2]))
        if chain == 1:
            steps.append(Step(layers[i]))
        i += chain
    return steps
