"""Sequential: layers applied in order, trained by one forward and one backward pass.

Files are fastnn/checkpoint.py's: ``fastnn.save_model(path, model)``, ``fastnn.load_model(path)``
(that module imports this one; this one knows nothing of files)."""
import numpy as np

from . import backends, config, fusion
from .errors import CheckpointError, ConfigError, ShapeError
from .layers import LAYER_TYPES, Dropout, Layer
from .losses import SoftmaxCrossEntropy, check_labels


def check_images(x, model, what="images"):
    """Host images for ``model``: shape (N, *model.input_shape) with N >= 1, and the model's dtype."""
    x = np.asarray(x)
    if x.ndim < 1 or tuple(x.shape[1:]) != model.input_shape or len(x) == 0:
        raise ShapeError(f"{what}: {model.name} expects (N, {', '.join(map(str, model.input_shape))}) "
                         f"with N >= 1, got {x.shape}")
    if x.dtype != model.dtype:
        raise ShapeError(f"{what}: expected {model.dtype} images, got {x.dtype}; convert with .astype(np.float32)")
    return x


def check_batch_size(batch_size, what="batch_size"):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"{what} must be a positive whole number, not {batch_size!r}")
    return int(batch_size)


class Sequential:
    """A stack of layers.

    ``input_shape`` is the shape of one example, e.g. (1, 28, 28); the constructor walks
    the layers once so that a layer that cannot take its input fails here, naming itself.
    Parameters are keyed ``"<layer index>.<name>"``, e.g. ``"0.W"``.

    The passes run a plan (fastnn/fusion.py): each Conv2D -> ReLU (-> MaxPool2D 2) and
    Dense -> ReLU chain is one fused kernel call. ``fuse=False`` (or FASTNN_FUSION=0, read when
    ``fuse`` is None) runs every layer alone; ``model.plan()`` shows the steps.
    """

    def __init__(self, layers, input_shape, name="model", rng=None, fuse=None):
        self.layers = list(layers)
        if not self.layers or not all(isinstance(layer, Layer) for layer in self.layers):
            raise ConfigError("Sequential needs a non-empty list of fastnn layers")
        self.input_shape = tuple(int(d) for d in input_shape)
        if not self.input_shape or min(self.input_shape) < 1:
            raise ConfigError(f"Sequential: input_shape must be one example's shape, positive sizes like "
                              f"(1, 28, 28), not {tuple(input_shape)}")
        self.name = name
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
        self.output_shape = shape
        # nobody reads the gradient of the input image, nor of the parameter-free layers (Flatten,
        # Dropout) before the first layer with parameters: that layer skips its dx product
        first = next((layer for layer in self.layers if layer.params), None)
        if hasattr(first, "need_dx"):
            first.need_dx = False
        self.set_fusion(config.fusion() if fuse is None else fuse)
        self.set_rng(np.random.default_rng() if rng is None else rng)

    # ------------------------------------------------------------------ the two passes
    def forward(self, x, train=True):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise ShapeError(f"{self.name}: expected an array of images, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.input_shape or x.shape[0] == 0:
            raise ShapeError(f"{self.name}: expected input of shape (N, {', '.join(map(str, self.input_shape))}) "
                             f"with N >= 1, got {tuple(x.shape)}")
        dtype = self.dtype
        if x.dtype != dtype:
            raise ShapeError(f"{self.name}: expected {np.dtype(dtype).name} input, got {x.dtype}; "
                             f"convert with x.astype(np.{np.dtype(dtype).name})")
        for step in self.steps:
            x = step.forward(x, train)
        return x

    def backward(self, dy):
        for step in reversed(self.steps):
            dy = step.backward(dy)
            if dy is None:  # the first layer with parameters skipped its input gradient
                break
        return dy

    def set_fusion(self, fuse: bool):
        """Run fusable chains as fused kernels (True) or every layer alone (False), from now on."""
        if not isinstance(fuse, (bool, np.bool_)):
            raise ConfigError(f"{self.name}: fuse must be True or False (None: FASTNN_FUSION decides), "
                              f"not {fuse!r}")
        self.fuse = bool(fuse)
        self.steps = fusion.plan(self.layers, self.fuse)

    def plan(self) -> list:
        """The steps the passes run, in order: fused blocks and single layers (fastnn/fusion.py)."""
        return list(self.steps)

    # ------------------------------------------------------------------ parameters
    @property
    def dtype(self):
        for _, param, _ in self.param_items():
            return param.dtype
        return np.dtype(np.float32)

    def param_items(self):
        """[(key, parameter, gradient or None)] in layer order."""
        return [(f"{i}.{name}", param, layer.grads.get(name))
                for i, layer in enumerate(self.layers) for name, param in layer.params.items()]

    def _arrays(self):
        for i, layer in enumerate(self.layers):
            for kind, table in (("param", layer.params), ("buffer", layer.buffers)):
                for name in table:
                    yield f"{kind}/{i}.{name}", table, name

    def state_arrays(self) -> dict:
        """Host copies of every parameter and buffer: {"param/0.W": array, "buffer/1.running_mean": ...}."""
        K = backends.get()
        return {key: K.to_host(table[name]).copy() for key, table, name in self._arrays()}

    def load_state_arrays(self, arrays: dict):
        """Set every parameter and buffer from host arrays (shapes must match exactly).
        All are checked before any is set, so refused arrays leave the model as it was."""
        K = backends.get()
        for key, table, name in self._arrays():
            if key not in arrays:
                raise CheckpointError(f"{self.name}: array {key!r} is missing")
            value = arrays[key]
            if tuple(value.shape) != tuple(table[name].shape):
                raise CheckpointError(f"{self.name}: array {key!r} has shape {tuple(value.shape)}, "
                                      f"the model needs {tuple(table[name].shape)}")
        for key, table, name in self._arrays():
            table[name] = K.to_device(np.ascontiguousarray(arrays[key], dtype=table[name].dtype))

    def to_backend(self):
        """Move parameters and buffers into the active backend's memory (a no-op on the CPU)."""
        self.load_state_arrays(self.state_arrays())
        return self

    def astype(self, dtype):
        """Cast every parameter and buffer (float64 for gradient checks on the numpy backend)."""
        for _, table, name in self._arrays():
            table[name] = table[name].astype(dtype)
        return self

    def num_params(self) -> int:
        return sum(int(np.prod(p.shape)) for _, p, _ in self.param_items())

    def set_rng(self, rng):
        """The one random generator every Dropout layer draws its masks from."""
        self.rng = rng
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.rng = rng

    # ------------------------------------------------------------------ inference
    def batches(self, x, batch_size):
        batch_size = check_batch_size(batch_size)
        for start in range(0, len(x), batch_size):
            yield start, x[start:start + batch_size]

    def predict(self, x, batch_size=1000):
        """Class labels (int64, host) for host images x (N, ...)."""
        K = backends.get()
        out = [K.to_host(self.forward(K.to_device(xb), train=False)).argmax(axis=1)
               for _, xb in self.batches(check_images(x, self), batch_size)]
        return np.concatenate(out)

    def predict_proba(self, x, batch_size=1000):
        """Class probabilities (N, K) float32 (host), the backend's softmax of the logits; rows sum to 1."""
        K = backends.get()
        out = [K.to_host(K.softmax(self.forward(K.to_device(xb), train=False)))
               for _, xb in self.batches(check_images(x, self), batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False)

    def evaluate(self, x, y, batch_size=1000):
        """(mean cross-entropy, accuracy as a fraction) on host images x and labels y, or on
        arrays already in the backend's memory (the trainer keeps its test set on the device):
        those are checked by forward and the loss (a label out of range makes it NaN, and the
        loss then reads the labels to say so)."""
        K = backends.get()
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray) or not hasattr(x, "shape"):
            x = check_images(x, self)
            y = check_labels(y, len(x), self.output_shape[0])
        elif tuple(y.shape) != (x.shape[0],):
            raise ShapeError(f"{self.name}: evaluate needs one label per image, got {tuple(y.shape)} "
                             f"for {tuple(x.shape)}")
        loss_layer = SoftmaxCrossEntropy()
        total_loss, correct = 0.0, 0
        for start, xb in self.batches(x, batch_size):
            yb = K.to_device(y[start:start + batch_size])
            logits = self.forward(K.to_device(xb), train=False)
            total_loss += loss_layer.forward(logits, yb) * len(xb)
            correct += K.count_correct(logits, yb)
        return total_loss / len(x), correct / len(x)

    # ------------------------------------------------------------------ files
    def config(self) -> dict:
        return {"name": self.name, "input_shape": list(self.input_shape),
                "layers": [{"type": type(layer).__name__, "config": layer.config()} for layer in self.layers]}

    @classmethod
    def from_config(cls, config: dict):
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ConfigError(f"a model config is a dict with a list of layers, not {config!r:.200}")
        layers = []
        for spec in config["layers"]:
            if not isinstance(spec, dict) or not isinstance(spec.get("config", {}), dict):
                raise ConfigError(f"a layer config is a dict {{'type': ..., 'config': {{...}}}}, not {spec!r:.200}")
            if spec.get("type") not in LAYER_TYPES:
                raise ConfigError(f"unknown layer type {spec.get('type')!r}: known are {', '.join(LAYER_TYPES)}")
            layers.append(LAYER_TYPES[spec["type"]](**spec.get("config", {})))
        return cls(layers, config["input_shape"], name=config.get("name", "model"))

    def summary(self) -> str:
        """Layers, output shapes, parameters, FLOPs per image and the plan, as text (Keras's prints it;
        this returns it: ``print(model.summary())``). fastnn/summary.py says what is counted."""
        from .summary import summary
        return summary(self)

    def to_onnx(self, path, opset=17):
        """Write this model to ``path`` as an ONNX file (fastnn/onnx_export.py; needs fastnn[onnx])."""
        from .onnx_export import to_onnx
        return to_onnx(self, path, opset)

    def __repr__(self):
        return self.summary()
