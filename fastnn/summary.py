"""``model.summary()`` and ``fastnn summary``: a model's layers, output shapes, parameters and FLOPs.

Like Keras's ``model.summary()``: one row per layer of ``model.layers`` (the layer list the
model is defined by, saved and loaded as), then the totals, then the plan the passes run
(fastnn/fusion.py: fused kernels in brackets). Output shapes come from each layer's own
``output_shape`` (the walk Sequential's constructor does), per image: the batch is "N".

What is counted
---------------
Parameters: "trainable" are the arrays in ``layer.params`` (what the optimizer updates);
"non-trainable" are ``layer.buffers`` (BatchNorm's running mean and variance), as Keras counts
them; "total" is both. Their memory is the bytes the arrays hold (4 per number in float32).

FLOPs: the forward pass of one image at inference (``train=False``), every floating-point
add, multiply, comparison or function evaluation counted as one, so a multiply-add is 2:

    Conv2D      2 * C * KH * KW * F * OH * OW   multiply-adds, + F * OH * OW  bias adds
    Dense       2 * D_in * D_out                multiply-adds, + D_out        bias adds
    ReLU, Sigmoid, Tanh     1 per output element (a max, or one function evaluation)
    MaxPool2D   size*size - 1 comparisons per output element
    AvgPool2D   size*size - 1 adds and 1 multiply (by 1/size^2) per output element
    BatchNorm   3 per element: (x - mean) * scale + beta (the per-channel scale
                gamma / sqrt(var + eps) is not counted: it is per channel, not per element)
    Flatten, Dropout        0 (a reshape; the identity at inference)

A fused block (Conv2D -> ReLU -> MaxPool2D) does the same arithmetic as its layers, so its
FLOPs are theirs. Training costs about three times the forward pass (the two backward
products of each Conv2D and Dense, less the input gradient the first layer skips).
A layer type not listed (a user's own) shows "?" and is left out of the total, which says so.
"""
import numpy as np

from .layers import AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh

_ACTIVATIONS = (ReLU, Sigmoid, Tanh)
_MOVES_NOTHING = (Flatten, Dropout)


def describe(layer) -> str:
    """A layer's type and key settings, e.g. "Conv2D 1->30 5x5", "Dense 4320->100", "MaxPool2D 2x2"."""
    if isinstance(layer, Conv2D):
        k = layer.kernel_size
        text = f"Conv2D {layer.in_channels}->{layer.out_channels} {k}x{k}"
        return (text + (f" stride {layer.stride}" if layer.stride != 1 else "")
                + (f" pad {layer.pad}" if layer.pad else ""))
    if isinstance(layer, Dense):
        return f"Dense {layer.in_features}->{layer.out_features}"
    if isinstance(layer, (MaxPool2D, AvgPool2D)):
        text = f"{type(layer).__name__} {layer.size}x{layer.size}"
        return (text + (f" stride {layer.stride}" if layer.stride != layer.size else "")
                + (f" pad {layer.pad}" if layer.pad else ""))
    if isinstance(layer, Dropout):
        return f"Dropout p={layer.p:g}"
    if isinstance(layer, BatchNorm):
        return f"BatchNorm {layer.num_features}"
    return type(layer).__name__


def layer_flops(layer, output_shape):
    """Forward FLOPs for one image through ``layer``, whose per-image output shape is ``output_shape``;
    None for a layer type not counted. The module docstring says what is counted."""
    out = int(np.prod(output_shape))
    if isinstance(layer, Conv2D):
        f, oh, ow = output_shape
        return 2 * layer.in_channels * layer.kernel_size ** 2 * f * oh * ow + f * oh * ow
    if isinstance(layer, Dense):
        return 2 * layer.in_features * layer.out_features + layer.out_features
    if isinstance(layer, _ACTIVATIONS):
        return out
    if isinstance(layer, MaxPool2D):
        return (layer.size ** 2 - 1) * out
    if isinstance(layer, AvgPool2D):
        return layer.size ** 2 * out
    if isinstance(layer, BatchNorm):
        return 3 * out
    if isinstance(layer, _MOVES_NOTHING):
        return 0
    return None


def _size(table) -> int:
    return sum(int(np.prod(a.shape)) for a in table.values())


def _bytes(table) -> int:
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in table.values())


def layer_rows(model) -> list:
    """One dict per layer of ``model.layers``: index, layer, description, output_shape (per image),
    params, buffers, flops (None: not counted) and kernel (the fused kernel it runs in, or None)."""
    kernels = {id(layer): step.kernel for step in model.plan() for layer in step.layers}
    rows, shape = [], model.input_shape
    for i, layer in enumerate(model.layers):
        out = layer.output_shape(shape)
        rows.append(dict(index=i, layer=layer, description=describe(layer), output_shape=out,
                         params=_size(layer.params), buffers=_size(layer.buffers),
                         flops=layer_flops(layer, out), kernel=kernels.get(id(layer))))
        shape = out
    return rows


def totals(model) -> dict:
    """trainable, non_trainable and total parameter counts, bytes (their memory), flops (per image,
    forward, the counted layers) and uncounted (the indices of layers whose FLOPs are not counted)."""
    rows = layer_rows(model)
    trainable = sum(r["params"] for r in rows)
    non_trainable = sum(r["buffers"] for r in rows)
    return dict(trainable=trainable, non_trainable=non_trainable, total=trainable + non_trainable,
                bytes=sum(_bytes(layer.params) + _bytes(layer.buffers) for layer in model.layers),
                flops=sum(r["flops"] for r in rows if r["flops"] is not None),
                uncounted=[r["index"] for r in rows if r["flops"] is None])


def human(n, unit="") -> str:
    """1_777_730 -> "1.78 M" + unit; below a thousand, the number itself."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n:,} {unit}".rstrip()


def human_bytes(n) -> str:
    for scale, prefix in ((2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if n >= scale:
            return f"{n / scale:.2f} {prefix}"
    return f"{n} B"


def plan_lines(model) -> list:
    """The steps the passes run, numbered by the layers they cover, fused kernels in brackets."""
    lines = ["plan (fused kernels in brackets; FASTNN_FUSION=0 or fuse=False runs each layer alone):"
             if model.fuse else "plan: every layer alone (fusion off)"]
    first = 0
    for step in model.plan():
        last = first + len(step.layers) - 1
        span = f"{first}" if first == last else f"{first}-{last}"
        lines.append(f"  {span:>5} {step!r}")
        first = last + 1
    return lines


def _shape_text(shape) -> str:
    return f"(N, {', '.join(map(str, shape))})"


def summary(model) -> str:
    """The model's summary as text (``print(model.summary())`` shows it); see the module docstring."""
    header = ("#", "Layer", "Output shape", "Params", "FLOPs/image")
    cells = [(str(r["index"]), r["description"], _shape_text(r["output_shape"]),
              f"{r['params'] + r['buffers']:,}", "?" if r["flops"] is None else f"{r['flops']:,}")
             for r in layer_rows(model)]
    widths = [max(len(row[j]) for row in [header] + cells) for j in range(len(header))]
    align = ("<", "<", "<", ">", ">")

    def line(row):
        return "  ".join(f"{text:{a}{w}}" for text, a, w in zip(row, align, widths)).rstrip()

    rule = "-" * len(line(header))
    t = totals(model)
    flops = f"{human(t['flops'], 'FLOPs')} ({t['flops']:,}), forward pass, multiply-add = 2"
    if t["uncounted"]:
        flops += f"; layers {', '.join(map(str, t['uncounted']))} not counted"
    lines = [f'Model: "{model.name}"  input {_shape_text(model.input_shape)}', rule, line(header), rule,
             *map(line, cells), rule,
             f"Total params: {t['total']:,} ({human_bytes(t['bytes'])}, {t['bytes']:,} bytes)",
             f"Trainable params: {t['trainable']:,}",
             f"Non-trainable params: {t['non_trainable']:,} (buffers: BatchNorm running statistics)",
             f"FLOPs per image: {flops}", rule, *plan_lines(model)]
    return "\n".join(lines)


def cmd_summary(args):
    """``fastnn summary MODEL.npz | --model NAME``: print the summary of a saved or a named model."""
    if args.model_file is not None:
        from .checkpoint import load_model
        model, _ = load_model(args.model_file)
    else:
        from .models import build
        model = build(args.model)
    print(summary(model))
    return 0
