"""Layers with ``forward(x, train)`` / ``backward(dy)``, as in the textbook's common/layers.py.

Layers hold no math: every computation goes through the active backend's kernels
(``K = backends.get()``). A layer keeps what its backward pass needs as attributes
(``self.x``, ``self.y``, ``self.cache``, ``self.mask``), its parameters in ``self.params``
and, after backward, their gradients in ``self.grads`` (same keys).

``config()`` returns the constructor arguments, so a model file can rebuild the layer.
"""
import numpy as np

from . import backends
from . import init as initialisers
from .errors import ConfigError, ShapeError


def _positive_int(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{layer}: {name} must be a positive whole number, not {value!r}")
    return int(value)


def _number_in(layer, name, value, low, high, high_inclusive=False):
    """A real number in [low, high) (or [low, high]); a ConfigError naming the layer otherwise."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and low <= value and (value <= high if high_inclusive else value < high)
    if not ok:
        raise ConfigError(f"{layer}: {name} must be a number in [{low}, {high}{']' if high_inclusive else ')'}, "
                          f"not {value!r}")
    return float(value)


class Layer:
    """Base class. ``params``/``grads``: name -> array; ``buffers``: saved state that is not trained."""

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.name = type(self).__name__
        self.y_shape = None  # the shape of the last forward output: backward checks dy against it
        self.kept_state = False  # whether the last forward kept what backward needs (train=True)

    def forward(self, x, train=True):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def config(self) -> dict:
        return {}

    @classmethod
    def declared_arrays(cls, config: dict) -> dict:
        """{"param/W": shape, "buffer/running_mean": shape, ...} that a layer made from ``config``
        holds, computed without making it (model files are checked against it before any allocation)."""
        return {}

    def output_shape(self, input_shape):
        """Per-example output shape for a per-example ``input_shape``; raises ShapeError if it can't take it."""
        return tuple(input_shape)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def _expect(self, x, ndim, what, dims=None):
        """Check x's rank (any if ``ndim`` is None), a non-empty batch, ``dims`` {axis: size} and its
        dtype (floating point; a layer with parameters needs theirs); the error names this layer.
        Layers check before any kernel runs, so a kernel never sees an array it was not written for."""
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise ShapeError(f"{self.name}: expected an array of shape {what}, got {type(x).__name__}")
        shape = tuple(x.shape)
        ok = (len(shape) == ndim if ndim is not None else len(shape) >= 1)
        ok = ok and all(shape[i] == size for i, size in (dims or {}).items())
        if not ok or shape[0] == 0:
            raise ShapeError(f"{self.name}: expected input of shape {what}, got {shape}")
        dtype = self.param_dtype
        if np.dtype(x.dtype).kind != "f" or (dtype is not None and x.dtype != dtype):
            want = np.dtype(dtype or np.float32).name
            raise ShapeError(f"{self.name}: expected {dtype or 'floating-point'} input, got {x.dtype}; "
                             f"convert with x.astype(np.{want})")

    @property
    def param_dtype(self):
        """The dtype of this layer's parameters (its inputs and gradients must have it); None without any."""
        return next(iter(self.params.values())).dtype if self.params else None

    def _kept(self, state, train):
        """What backward needs, kept only in training: inference (train=False) holds no
        backward state, so evaluating a big batch frees its activations as it goes."""
        self.kept_state = train
        return state if train else None

    def _expect_grad(self, dy):
        """dy must have the shape of this layer's last forward output."""
        if self.y_shape is None:
            raise ShapeError(f"{self.name}: backward() before forward(): there is nothing to differentiate")
        if not self.kept_state:
            raise ShapeError(f"{self.name}: backward() after forward(x, train=False): inference keeps no "
                             f"backward state; run forward(x, train=True) first")
        if not hasattr(dy, "shape") or not hasattr(dy, "dtype") or tuple(dy.shape) != self.y_shape:
            got = tuple(dy.shape) if hasattr(dy, "shape") else type(dy).__name__
            raise ShapeError(f"{self.name}: expected a gradient of shape {self.y_shape} (the forward output's), "
                             f"got {got}")
        dtype = self.param_dtype
        if np.dtype(dy.dtype).kind != "f" or (dtype is not None and dy.dtype != dtype):
            raise ShapeError(f"{self.name}: expected a {dtype or 'floating-point'} gradient, got {dy.dtype}; "
                             f"convert with dy.astype(np.{np.dtype(dtype or np.float32).name})")


class Dense(Layer):
    """y = x @ W + b; x (N, in_features) -> y (N, out_features). The textbook's Affine."""

    def __init__(self, in_features, out_features, init="he", rng=None):
        super().__init__()
        self.in_features = _positive_int("Dense", "in_features", in_features)
        self.out_features = _positive_int("Dense", "out_features", out_features)
        self.init = init
        self.need_dx = True  # Sequential turns this off for the first layer with parameters
        rng = np.random.default_rng() if rng is None else rng
        shapes = self.declared_arrays(self.config())
        self.params["W"] = initialisers.weights(shapes["param/W"], self.in_features, init, rng)
        self.params["b"] = np.zeros(shapes["param/b"], np.float32)

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, init=self.init)

    @classmethod
    def declared_arrays(cls, config):
        d_in, d_out = int(config["in_features"]), int(config["out_features"])
        return {"param/W": (d_in, d_out), "param/b": (d_out,)}

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            raise ShapeError(f"{self.name}: expected input of shape (N, {self.in_features}), "
                             f"got (N, {', '.join(map(str, input_shape))}); put a Flatten() before it")
        return (self.out_features,)

    def check_input(self, x):
        """Refuse an x this layer cannot take (naming the layer); note the output shape."""
        self._expect(x, 2, f"(N, {self.in_features})", {1: self.in_features})
        self.y_shape = (x.shape[0], self.out_features)

    def forward(self, x, train=True):
        self.check_input(x)
        self.x = self._kept(x, train)
        return backends.get().dense_forward(x, self.params["W"], self.params["b"])

    def backward(self, dy):
        self._expect_grad(dy)
        dx, self.grads["W"], self.grads["b"] = backends.get().dense_backward(dy, self.x, self.params["W"],
                                                                             need_dx=self.need_dx)
        return dx


class Conv2D(Layer):
    """Convolution by im2col; x (N, in_channels, H, W) -> y (N, out_channels, OH, OW)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad=0, init="he", rng=None):
        super().__init__()
        self.in_channels = _positive_int("Conv2D", "in_channels", in_channels)
        self.out_channels = _positive_int("Conv2D", "out_channels", out_channels)
        self.kernel_size = _positive_int("Conv2D", "kernel_size", kernel_size)
        self.stride = _positive_int("Conv2D", "stride", stride)
        if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
            raise ConfigError(f"Conv2D: pad must be a whole number >= 0, not {pad!r}")
        self.pad = int(pad)
        self.init = init
        self.need_dx = True  # Sequential turns this off for the first layer with parameters
        rng = np.random.default_rng() if rng is None else rng
        shapes = self.declared_arrays(self.config())
        fan_in = self.in_channels * self.kernel_size ** 2
        self.params["W"] = initialisers.weights(shapes["param/W"], fan_in, init, rng)
        self.params["b"] = np.zeros(shapes["param/b"], np.float32)

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size,
                    stride=self.stride, pad=self.pad, init=self.init)

    @classmethod
    def declared_arrays(cls, config):
        c, f, k = int(config["in_channels"]), int(config["out_channels"]), int(config["kernel_size"])
        return {"param/W": (f, c, k, k), "param/b": (f,)}

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ShapeError(f"{self.name}: expected input of shape (N, {self.in_channels}, H, W), "
                             f"got (N, {', '.join(map(str, input_shape))})")
        _, h, w = input_shape
        oh = (h + 2 * self.pad - self.kernel_size) // self.stride + 1
        ow = (w + 2 * self.pad - self.kernel_size) // self.stride + 1
        if oh < 1 or ow < 1:
            raise ShapeError(f"{self.name}: a {h}x{w} input is smaller than the {self.kernel_size}x"
                             f"{self.kernel_size} kernel with pad {self.pad}")
        return (self.out_channels, oh, ow)

    def check_input(self, x):
        """Refuse an x this layer cannot take (naming the layer); note the output shape."""
        self._expect(x, 4, f"(N, {self.in_channels}, H, W)", {1: self.in_channels})
        self.y_shape = (x.shape[0],) + self.output_shape(tuple(x.shape[1:]))

    def forward(self, x, train=True):
        self.check_input(x)
        y, cache = backends.get().conv2d_forward(x, self.params["W"], self.params["b"], self.stride, self.pad)
        self.cache = self._kept(cache, train)
        return y

    def backward(self, dy):
        self._expect_grad(dy)
        dx, self.grads["W"], self.grads["b"] = backends.get().conv2d_backward(dy, self.cache, need_dx=self.need_dx)
        return dx


class _Pool2D(Layer):
    kind = ""

    def __init__(self, size=2, stride=None, pad=0):
        super().__init__()
        self.size = _positive_int(type(self).__name__, "size", size)
        self.stride = self.size if stride is None else _positive_int(type(self).__name__, "stride", stride)
        if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or not 0 <= pad <= self.size // 2:
            raise ConfigError(f"{self.name}: pad must be a whole number from 0 to size // 2, not {pad!r}")
        self.pad = int(pad)

    def config(self):
        return dict(size=self.size, stride=self.stride, pad=self.pad)

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ShapeError(f"{self.name}: expected input of shape (N, C, H, W), "
                             f"got (N, {', '.join(map(str, input_shape))})")
        c, h, w = input_shape
        oh = (h + 2 * self.pad - self.size) // self.stride + 1
        ow = (w + 2 * self.pad - self.size) // self.stride + 1
        if oh < 1 or ow < 1:
            raise ShapeError(f"{self.name}: a {h}x{w} input is smaller than the {self.size}x{self.size} window")
        return (c, oh, ow)

    def forward(self, x, train=True):
        self._expect(x, 4, "(N, C, H, W)")
        self.y_shape = (x.shape[0],) + self.output_shape(tuple(x.shape[1:]))
        y, cache = getattr(backends.get(), f"{self.kind}_forward")(x, self.size, self.stride, self.pad)
        self.cache = self._kept(cache, train)
        return y

    def backward(self, dy):
        self._expect_grad(dy)
        return getattr(backends.get(), f"{self.kind}_backward")(dy, self.cache)


class MaxPool2D(_Pool2D):
    """Max over size x size windows; backward routes each gradient to its window's maximum."""
    kind = "maxpool2d"


class AvgPool2D(_Pool2D):
    """Mean over size x size windows (zero padding counts)."""
    kind = "avgpool2d"


class _Activation(Layer):
    kind = ""

    def forward(self, x, train=True):
        self._expect(x, None, "(N, ...)")
        y = getattr(backends.get(), f"{self.kind}_forward")(x)
        self.y = self._kept(y, train)
        self.y_shape = tuple(x.shape)
        return y

    def backward(self, dy):
        self._expect_grad(dy)
        return getattr(backends.get(), f"{self.kind}_backward")(dy, self.y)


class ReLU(_Activation):
    """max(x, 0); the gradient passes where the output is positive."""
    kind = "relu"


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)); dx = dy * y * (1 - y)."""
    kind = "sigmoid"


class Tanh(_Activation):
    """tanh(x); dx = dy * (1 - y^2)."""
    kind = "tanh"


class Dropout(Layer):
    """Inverted dropout: in training each unit is zeroed with probability p and the rest
    scaled by 1 / (1 - p), so inference is the identity.

    ``fixed_mask`` (tests, gradient checks) replaces the random mask when set.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p = _number_in("Dropout", "p", p, 0.0, 1.0)
        self.rng = np.random.default_rng() if rng is None else rng
        self.fixed_mask = None
        self.mask = None

    def config(self):
        return dict(p=self.p)

    def forward(self, x, train=True):
        self._expect(x, None, "(N, ...)")
        self.y_shape = tuple(x.shape)
        self.kept_state = train
        if not train or self.p == 0.0:
            self.mask = None
            return x
        K = backends.get()
        self.mask = self.fixed_mask if self.fixed_mask is not None else K.dropout_mask(x.shape, self.p, self.rng)
        return K.dropout_forward(x, self.mask)

    def backward(self, dy):
        self._expect_grad(dy)
        return dy if self.mask is None else backends.get().dropout_backward(dy, self.mask)


class BatchNorm(Layer):
    """Batch normalisation per feature of (N, D) or per channel of (N, C, H, W).

    Training normalises with the batch's statistics and keeps running averages
    (``buffers``) that inference uses.
    """

    def __init__(self, num_features, momentum=0.9, eps=1e-5):
        super().__init__()
        self.num_features = _positive_int("BatchNorm", "num_features", num_features)
        self.momentum = _number_in("BatchNorm", "momentum", momentum, 0.0, 1.0)
        self.eps = _number_in("BatchNorm", "eps", eps, 0.0, 1.0)
        if self.eps == 0.0:
            raise ConfigError("BatchNorm: eps must be positive: it keeps the division by the batch deviation finite")
        self.params["gamma"] = np.ones(self.num_features, np.float32)
        self.params["beta"] = np.zeros(self.num_features, np.float32)
        self.buffers["running_mean"] = np.zeros(self.num_features, np.float32)
        self.buffers["running_var"] = np.ones(self.num_features, np.float32)

    def config(self):
        return dict(num_features=self.num_features, momentum=self.momentum, eps=self.eps)

    @classmethod
    def declared_arrays(cls, config):
        n = (int(config["num_features"]),)
        return {"param/gamma": n, "param/beta": n, "buffer/running_mean": n, "buffer/running_var": n}

    def output_shape(self, input_shape):
        if input_shape[0] != self.num_features or len(input_shape) not in (1, 3):
            raise ShapeError(f"{self.name}: expected input of shape (N, {self.num_features}) or "
                             f"(N, {self.num_features}, H, W), got (N, {', '.join(map(str, input_shape))})")
        return tuple(input_shape)

    def forward(self, x, train=True):
        self._expect(x, x.ndim if getattr(x, "ndim", 0) in (2, 4) else 2,
                     f"(N, {self.num_features}) or (N, {self.num_features}, H, W)", {1: self.num_features})
        self.y_shape = tuple(x.shape)
        K = backends.get()
        gamma, beta = self.params["gamma"], self.params["beta"]
        self.kept_state = train
        if not train:
            self.cache = None
            return K.batchnorm_inference(x, gamma, beta, self.buffers["running_mean"],
                                         self.buffers["running_var"], self.eps)
        y, mean, var, self.cache = K.batchnorm_forward(x, gamma, beta, self.eps)
        K.running_average_update(self.buffers["running_mean"], mean, self.momentum)
        K.running_average_update(self.buffers["running_var"], var, self.momentum)
        return y

    def backward(self, dy):
        self._expect_grad(dy)
        dx, self.grads["gamma"], self.grads["beta"] = backends.get().batchnorm_backward(dy, self.cache)
        return dx


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W); backward restores the shape."""

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, train=True):
        self._expect(x, None, "(N, ...)")
        self.input_shape = x.shape  # all that backward needs, kept in inference too: it costs nothing
        self.kept_state = True
        self.y_shape = (x.shape[0], int(np.prod(x.shape[1:])))
        return x.reshape(self.y_shape)

    def backward(self, dy):
        self._expect_grad(dy)
        return dy.reshape(self.input_shape)


LAYER_TYPES = {cls.__name__: cls for cls in
               (Dense, Conv2D, MaxPool2D, AvgPool2D, ReLU, Sigmoid, Tanh, Dropout, BatchNorm, Flatten)}
