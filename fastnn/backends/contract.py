"""The kernel contract: every kernel a backend must export, with its shapes.

Every backend package (``fastnn/backends/<name>/``) exports exactly these names, which
``kernels_of`` gathers from its modules (MODULES): each backend's ``__init__`` is one call to it,
so this file is the only list of them. The registry checks at load time that none is missing.

Conventions (the same in every backend):

* Arrays are float32 (the numpy backend also accepts float64, for gradient checks);
  labels and indices are int64.
* Images are NCHW: ``x`` is ``(N, C, H, W)``; convolution weights are ``(F, C, KH, KW)``.
* Dense weights are ``(D_in, D_out)`` as in the textbook: ``y = x @ W + b``.
* A kernel never writes into its inputs, except the ``*_update`` kernels, which update a
  parameter and its optimizer state in place (that is what their names say).
* ``cache`` objects are opaque: only the backend that made one reads it. A backend may
  keep whatever it needs there (im2col columns, argmax indices, reusable buffers).
* NaN and infinities go where the reference sends them: a NaN weight must reach the loss,
  so that training stops. ReLU keeps NaN (``np.maximum(x, 0)``), max-pooling's first NaN wins its
  window (``np.argmax``), masks are products (``dy * (y > 0)``: an infinite dy at a blocked unit
  is NaN). Products are sums in a backend's own order, and Winograd mixes a tile's pixels before
  it multiplies: there an output may be NaN where the reference's is +-inf, and a non-finite
  input spreads over its tile, but no output is finite where the reference's is not
  (tests/backends/test_nonfinite.py).
* ``to_device`` / ``to_host`` move arrays between host NumPy and the backend's memory:
  the identity on CPU backends, real copies on cuda. Layers and the trainer only touch
  arrays through kernels, ``reshape`` and these two functions.
"""

# name -> signature and shapes (the docs of the contract; the registry checks the names).
KERNELS = {
    # --- arrays -------------------------------------------------------------------
    "to_device": "to_device(host_array) -> array           backend memory copy (identity on CPU)",
    "to_host": "to_host(array) -> numpy.ndarray               host copy (identity on CPU)",
    "zeros": "zeros(shape, dtype=float32) -> array",
    "gather": "gather(x, indices) -> x[indices]          (N, ...) rows picked by int64 indices",
    # --- dense --------------------------------------------------------------------
    "dense_forward": "dense_forward(x, W, b) -> y                x (N, D), W (D, M), b (M,) -> y (N, M)",
    "dense_backward": "dense_backward(dy, x, W, need_dx=True) -> (dx or None, dW, db)  dy (N, M) -> dx (N, D), dW (D, M), db (M,)",
    # --- convolution --------------------------------------------------------------
    "im2col": "im2col(x, kh, kw, stride, pad) -> col     x (N, C, H, W) -> col (N*OH*OW, C*KH*KW)",
    "col2im": "col2im(col, x_shape, kh, kw, stride, pad) -> x   adds overlapping windows back",
    "conv2d_forward": "conv2d_forward(x, W, b, stride, pad) -> (y, cache)   W (F, C, KH, KW) -> y (N, F, OH, OW)",
    "conv2d_backward": "conv2d_backward(dy, cache, need_dx=True) -> (dx or None, dW, db)   the first layer skips dx",
    "conv2d_algorithm": "conv2d_algorithm(x_shape, w_shape, stride, pad) -> str   the algorithm conv2d_forward runs for this shape",
    # --- fused chains: each the composition of the kernels above (fastnn/backends/composed.py
    #     is that composition, the specification); the pool is 2x2 max, stride 2, no padding ---
    "dense_relu_forward": "dense_relu_forward(x, W, b) -> y         y = relu(x @ W + b)",
    "dense_relu_backward": "dense_relu_backward(dy, x, W, y, need_dx=True) -> (dx or None, dW, db)   y the forward output",
    "conv2d_relu_forward": "conv2d_relu_forward(x, W, b, stride, pad) -> (y, cache)   y = relu(conv2d(x))",
    "conv2d_relu_backward": "conv2d_relu_backward(dy, cache, need_dx=True) -> (dx or None, dW, db)",
    "conv2d_relu_pool_forward": "conv2d_relu_pool_forward(x, W, b, stride, pad) -> (y, cache)   y = maxpool2x2(relu(conv2d(x))) (N, F, OH//2, OW//2)",
    "conv2d_relu_pool_backward": "conv2d_relu_pool_backward(dy, cache, need_dx=True) -> (dx or None, dW, db)",
    # --- pooling ------------------------------------------------------------------
    "maxpool2d_forward": "maxpool2d_forward(x, size, stride, pad) -> (y, cache)   (N, C, H, W) -> (N, C, OH, OW)",
    "maxpool2d_backward": "maxpool2d_backward(dy, cache) -> dx",
    "avgpool2d_forward": "avgpool2d_forward(x, size, stride, pad) -> (y, cache)   zero padding counted",
    "avgpool2d_backward": "avgpool2d_backward(dy, cache) -> dx",
    # --- activations and dropout --------------------------------------------------
    "relu_forward": "relu_forward(x) -> y",
    "relu_backward": "relu_backward(dy, y) -> dx               y is the forward output",
    "sigmoid_forward": "sigmoid_forward(x) -> y",
    "sigmoid_backward": "sigmoid_backward(dy, y) -> dx",
    "tanh_forward": "tanh_forward(x) -> y",
    "tanh_backward": "tanh_backward(dy, y) -> dx",
    "dropout_mask": "dropout_mask(shape, p, rng) -> mask       float32, 0 or 1/(1-p); rng a numpy Generator",
    "dropout_forward": "dropout_forward(x, mask) -> y            y = x * mask",
    "dropout_backward": "dropout_backward(dy, mask) -> dx         dx = dy * mask",
    # --- batch normalisation -------------------------------------------------------
    "batchnorm_forward": "batchnorm_forward(x, gamma, beta, eps) -> (y, mean, var, cache)   x (N, D) per feature or (N, C, H, W) per channel",
    "batchnorm_backward": "batchnorm_backward(dy, cache) -> (dx, dgamma, dbeta)",
    "batchnorm_inference": "batchnorm_inference(x, gamma, beta, mean, var, eps) -> y",
    "running_average_update": "running_average_update(avg, value, momentum)   avg = momentum*avg + (1-momentum)*value, in place",
    # --- losses ---------------------------------------------------------------------
    "softmax_cross_entropy": "softmax_cross_entropy(logits, labels, smoothing=0.0) -> (loss, cache)   (N, K), int64 (N,) -> float mean of -(q * log softmax).sum(1), q = (1-smoothing)*onehot + smoothing/K",
    "softmax_cross_entropy_backward": "softmax_cross_entropy_backward(cache) -> dlogits   (softmax - q) / N",
    "softmax": "softmax(logits) -> probabilities          (N, K), rows sum to 1",
    "mse_loss": "mse_loss(y, t) -> (loss, cache)          0.5 * sum((y - t)**2) / N",
    "mse_loss_backward": "mse_loss_backward(cache) -> dy",
    "count_correct": "count_correct(logits, labels) -> int     number of rows whose argmax equals the label",
    # --- optimizers: in place on param and its state; g is read only ---------------
    # weight decay is L2 added to the gradient (g + wd * param), as in PyTorch.
    "sgd_update": "sgd_update(param, grad, lr, weight_decay)",
    "momentum_update": "momentum_update(param, grad, velocity, lr, momentum, weight_decay)",
    "nesterov_update": "nesterov_update(param, grad, velocity, lr, momentum, weight_decay)",
    "adagrad_update": "adagrad_update(param, grad, sum_sq, lr, eps, weight_decay)",
    "rmsprop_update": "rmsprop_update(param, grad, sq_avg, lr, alpha, eps, weight_decay)",
    "adadelta_update": "adadelta_update(param, grad, sq_avg, delta_avg, lr, rho, eps, weight_decay)",
    "adam_update": "adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay)   step counts from 1",
    # --- augmentation ---------------------------------------------------------------
    "warp_affine": "warp_affine(x, theta) -> y               x (N, C, H, W), theta (N, 2, 3) -> y (N, C, H, W): y[n, :, i, j] = bilinear sample of x[n] at column u, row v, (u, v) = theta[n] @ (j, i, 1), zeros outside",
}

NAMES = tuple(KERNELS)

# Beyond the contract: functions a backend may export (kernels_of gathers them too); callers
# ask with getattr(K, name, None). The registry does not require them.
OPTIONAL = {
    "conv2d_choice": "conv2d_choice(x_shape, w_shape, stride, pad) -> tuning.Choice(algorithm, source, ms)   "
                     "what conv2d_algorithm returns and why: forced, tuned (ms per candidate), only or table "
                     "(fastnn/backends/tuning.py); backends with one algorithm lack it",
}

# the modules a backend package defines its kernels in (the same names in every backend); a
# backend without ``fused`` runs the composition of its own unfused kernels (composed.py)
MODULES = ("arrays", "dense", "conv", "fused", "pool", "activation", "norm", "loss", "optim", "augment")


def kernels_of(package: str) -> dict:
    """{contract name: kernel} that backend package ``package`` (e.g. ``__name__`` in its
    ``__init__``) defines in its MODULES, the OPTIONAL names it has among them. A name that two
    modules define differently is an error."""
    import importlib
    import importlib.util
    import sys

    table, where = {}, {}
    for module_name in MODULES:
        if importlib.util.find_spec(f"{package}.{module_name}") is None:
            continue
        module = importlib.import_module(f"{package}.{module_name}")
        for name in NAMES + tuple(OPTIONAL):
            kernel = getattr(module, name, None)
            if kernel is None:
                continue
            if name in table and table[name] is not kernel:
                raise ImportError(f"{package}: contract kernel {name} is defined both in "
                                  f"{where[name]} and in {module_name}: keep one")
            table.setdefault(name, kernel)
            where.setdefault(name, module_name)
    if "fused" not in where.values():
        from .composed import fused_kernels
        table.update(fused_kernels(sys.modules[package]))  # looks the unfused kernels up at call time
    return table


def missing(table) -> list[str]:
    """Contract names that ``table`` (a module or namespace) does not export."""
    return [name for name in NAMES if not callable(getattr(table, name, None))]
