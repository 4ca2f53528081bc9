"""Sequential: layers applied in order, trained by one forward and one backward pass."""
import numpy as np

from . import backends
from .errors import CheckpointError, ConfigError, ShapeError
from .layers import LAYER_TYPES, Dropout, Layer
from .losses import SoftmaxCrossEntropy


class Sequential:
    """A stack of layers.

    ``input_shape`` is the shape of one example, e.g. (1, 28, 28); the constructor walks
    the layers once so that a layer that cannot take its input fails here, naming itself.
    Parameters are keyed ``"<layer index>.<name>"``, e.g. ``"0.W"``.
    """

    def __init__(self, layers, input_shape, name="model", rng=None):
        self.layers = list(layers)
        if not self.layers or not all(isinstance(layer, Layer) for layer in self.layers):
            raise ConfigError("Sequential needs a non-empty list of fastnn layers")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.name = name
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
        self.output_shape = shape
        if hasattr(self.layers[0], "need_dx"):
            self.layers[0].need_dx = False  # the input image needs no gradient
        self.set_rng(np.random.default_rng() if rng is None else rng)

    # ------------------------------------------------------------------ the two passes
    def forward(self, x, train=True):
        if tuple(x.shape[1:]) != self.input_shape or x.shape[0] == 0:
            raise ShapeError(f"{self.name}: expected input of shape (N, {', '.join(map(str, self.input_shape))}) "
                             f"with N >= 1, got {tuple(x.shape)}")
        dtype = self.dtype
        if x.dtype != dtype:
            raise ShapeError(f"{self.name}: expected {np.dtype(dtype).name} input, got {x.dtype}; "
                             f"convert with x.astype(np.{np.dtype(dtype).name})")
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
            if dy is None:  # the first layer skipped its input gradient
                break
        return dy

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
        """Set every parameter and buffer from host arrays (shapes must match exactly)."""
        K = backends.get()
        for key, table, name in self._arrays():
            if key not in arrays:
                raise CheckpointError(f"{self.name}: array {key!r} is missing")
            value = arrays[key]
            if tuple(value.shape) != tuple(table[name].shape):
                raise CheckpointError(f"{self.name}: array {key!r} has shape {tuple(value.shape)}, "
                                      f"the model needs {tuple(table[name].shape)}")
            table[name] = K.to_device(np.ascontiguousarray(value, dtype=table[name].dtype))

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
        for start in range(0, len(x), batch_size):
            yield start, x[start:start + batch_size]

    def predict(self, x, batch_size=1000):
        """Class labels (int64, host) for host images x (N, ...)."""
        K = backends.get()
        out = [K.to_host(self.forward(K.to_device(xb), train=False)).argmax(axis=1)
               for _, xb in self.batches(np.asarray(x), batch_size)]
        return np.concatenate(out)

    def evaluate(self, x, y, batch_size=1000):
        """(mean cross-entropy, accuracy as a fraction) on host images x and labels y."""
        K = backends.get()
        loss_layer = SoftmaxCrossEntropy()
        total_loss, correct = 0.0, 0
        for start, xb in self.batches(np.asarray(x), batch_size):
            yb = K.to_device(np.asarray(y[start:start + batch_size], dtype=np.int64))
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
        layers = []
        for spec in config["layers"]:
            if spec.get("type") not in LAYER_TYPES:
                raise ConfigError(f"unknown layer type {spec.get('type')!r}: known are {', '.join(LAYER_TYPES)}")
            layers.append(LAYER_TYPES[spec["type"]](**spec.get("config", {})))
        return cls(layers, config["input_shape"], name=config.get("name", "model"))

    def save(self, path, metadata=None):
        from .checkpoint import save_model
        save_model(path, self, metadata)

    @classmethod
    def load(cls, path):
        from .checkpoint import load_model
        return load_model(path)[0]

    def summary(self) -> str:
        lines, shape = [f"{self.name}: input {self.input_shape}"], self.input_shape
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            n = sum(int(np.prod(p.shape)) for p in layer.params.values())
            lines.append(f"  {i:2d} {layer!r:60s} -> {shape}  ({n:,} parameters)")
        lines.append(f"  total {self.num_params():,} parameters")
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()
