"""ONNX export: ``fastnn.to_onnx(model, path)``, ``model.to_onnx(path)`` and ``fastnn export``.

The graph is the model at inference (``model.forward(x, train=False)``), one layer of
``model.layers`` after another (the layer list the model is defined by, not the fused plan:
a fused Conv2D -> ReLU -> MaxPool2D block computes what its three layers compute), each as
standard ONNX operators:

    Conv2D      Conv(x, W, b)         pads [p, p, p, p], strides [s, s]; W (F, C, KH, KW) as fastnn's
    MaxPool2D   MaxPool               padding never wins a max (fastnn pads with -inf)
    AvgPool2D   AveragePool           count_include_pad=1: fastnn counts the zero padding in the mean
    Dense       Gemm(x, W, b)         y = x @ W + b with fastnn's W (D_in, D_out): no transpose
    ReLU, Sigmoid, Tanh               Relu, Sigmoid, Tanh
    Dropout     Identity              inverted dropout is the identity at inference
    BatchNorm   BatchNormalization(x, gamma, beta, running_mean, running_var), epsilon eps:
                the inference form, per feature of (N, D) or per channel of (N, C, H, W) alike
                (ONNX normalises axis 1 of either)
    Flatten     Flatten axis=1

Pools round their output size down, as fastnn's do (ceil_mode=0, ONNX's default).
Input "images" is (N, *model.input_shape) and output "logits" (N, K), float32, with N
dynamic; parameters and buffers are float32 initializers named by fastnn's keys ("0.W",
"3.running_mean"). The opset is 17 unless asked otherwise. ``onnx`` is the optional extra
``pip install "fastnn[onnx]"``, imported only when a model is exported; onnxruntime runs the
file (tests/test_onnx.py holds it to fastnn's own forward pass).
"""
import json
from pathlib import Path

import numpy as np

from . import __version__
from .errors import ConfigError
from .layers import AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh

DEFAULT_OPSET = 17
MIN_OPSET = 17
INPUT, OUTPUT = "images", "logits"
INSTALL = 'pip install "fastnn[onnx]" (in a checkout: pip install -e ".[onnx]")'


def require_onnx():
    """Import onnx, or say how to install it."""
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as e:
        raise ConfigError(f"exporting to ONNX needs the onnx package: {INSTALL}") from e
    return onnx


# Each layer type -> (ONNX operator, the layer's arrays it takes after x, its attributes).
# Layer i's arrays are the initializers "i.<name>" (its params and buffers).

def _conv(layer):
    k, s, p = layer.kernel_size, layer.stride, layer.pad
    return "Conv", ["W", "b"], dict(kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])


def _pool(op, **extra):
    def export(layer):
        k, s, p = layer.size, layer.stride, layer.pad
        return op, [], dict(kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], **extra)
    return export


EXPORTERS = {
    Conv2D: _conv,
    MaxPool2D: _pool("MaxPool"),
    AvgPool2D: _pool("AveragePool", count_include_pad=1),
    Dense: lambda layer: ("Gemm", ["W", "b"], {}),  # y = x @ W + b (alpha = beta = 1, no transposes)
    ReLU: lambda layer: ("Relu", [], {}),
    Sigmoid: lambda layer: ("Sigmoid", [], {}),
    Tanh: lambda layer: ("Tanh", [], {}),
    Dropout: lambda layer: ("Identity", [], {}),
    BatchNorm: lambda layer: ("BatchNormalization", ["gamma", "beta", "running_mean", "running_var"],
                              dict(epsilon=layer.eps)),
    Flatten: lambda layer: ("Flatten", [], dict(axis=1)),
}


def check_exportable(model):
    """Refuse, naming the layer, a model with a layer type this module has no operators for."""
    for i, layer in enumerate(model.layers):
        if type(layer) not in EXPORTERS:  # exact types: a subclass may compute something else
            raise ConfigError(f"{model.name}: layer {i} ({type(layer).__name__}) has no ONNX export; "
                              f"exportable layers are {', '.join(cls.__name__ for cls in EXPORTERS)}")


def check_opset(opset, onnx):
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"opset must be a whole number from {MIN_OPSET} to {newest} (the newest this onnx "
                          f"{onnx.__version__} knows), not {opset!r}")
    return int(opset)


def build_onnx(model, opset=DEFAULT_OPSET):
    """The checked ``onnx.ModelProto`` of ``model`` at inference (see the module docstring)."""
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper
    opset = check_opset(opset, onnx)
    check_exportable(model)
    arrays = model.state_arrays()  # host copies: "param/0.W", "buffer/1.running_mean", ...
    initializers = [numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), key.split("/", 1)[1])
                    for key, value in arrays.items()]
    nodes, x = [], INPUT
    for i, layer in enumerate(model.layers):
        op, names, attributes = EXPORTERS[type(layer)](layer)
        y = OUTPUT if i == len(model.layers) - 1 else f"{i}.{type(layer).__name__.lower()}"
        nodes.append(helper.make_node(op, [x] + [f"{i}.{name}" for name in names], [y],
                                      name=f"{i}.{type(layer).__name__}", doc_string=repr(layer), **attributes))
        x = y
    graph = helper.make_graph(
        nodes, model.name,
        inputs=[helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", *model.input_shape])],
        outputs=[helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", *model.output_shape])],
        initializer=initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="fastnn", producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets),  # the oldest IR: most runtimes
                              doc_string=f"{model.name}, exported by fastnn {__version__}")
    helper.set_model_props(proto, {"model_name": model.name, "fastnn_version": __version__,
                                   "fastnn_config": json.dumps(model.config())})
    onnx.checker.check_model(proto, full_check=True)  # full: shape inference must agree with fastnn's shapes
    return proto


def to_onnx(model, path, opset=DEFAULT_OPSET):
    """Write ``model`` (a fastnn Sequential) to ``path`` as an ONNX file, atomically; returns the
    ``onnx.ModelProto``. Needs the ``onnx`` extra: pip install "fastnn[onnx]"."""
    from .checkpoint import atomic_write
    proto = build_onnx(model, opset)
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))
    return proto


def cmd_export(args):
    """``fastnn export MODEL.npz OUT.onnx``: a saved model (or a checkpoint's model) as ONNX."""
    from .checkpoint import check_writable, load_model
    require_onnx()  # fail before reading the model
    out = Path(args.out_file)
    if out.is_dir():
        raise ConfigError(f"{out}: is a directory; give a file name such as {out / 'model.onnx'}")
    if out.resolve() == Path(args.model_file).resolve():
        raise ConfigError(f"{out}: would overwrite the model file; give another name (e.g. model.onnx)")
    if out.suffix.lower() == ".npz":  # most likely MODEL.npz and OUT.onnx swapped, or a typo
        raise ConfigError(f"{out}: an ONNX file named like a fastnn model (.npz); give a name ending in .onnx")
    check_writable(out, str(out))  # before the export, not after it
    model, _ = load_model(args.model_file)
    to_onnx(model, out, opset=args.opset)
    print(f"wrote {out}: {model.name}, ONNX opset {args.opset}, {out.stat().st_size:,} bytes; "
          f"input {INPUT!r} (N, {', '.join(map(str, model.input_shape))}) -> output {OUTPUT!r} "
          f"(N, {', '.join(map(str, model.output_shape))})")
    return 0
