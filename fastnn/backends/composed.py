"""The fused kernels as compositions of a backend's unfused kernels: the specification.

A fused kernel computes a chain of layers in one call (convolution + bias + ReLU, then
possibly a 2x2 max-pool; dense + bias + ReLU) so that a compiled backend can do it in one
pass, one parallel region, without writing the intermediate activations to memory. What it
computes is exactly this composition; the numpy backend (and cuda) use it as it stands, and
tests/backends/test_fused.py holds every backend's fused kernels to it.

    kernels = fused_kernels(K)   # K: a backend module with the unfused kernels

Backward through a 2x2 max-pool reaches only each window's winner, and only where the ReLU
let it through: the winner's output is the pooled output, so the mask is ``y > 0`` of the
pooled y. A compiled backend can use that to skip the zeros.
"""
POOL = (2, 2, 0)  # the fused max-pool: size 2, stride 2, pad 0


def fused_kernels(K) -> dict:
    """name -> fused kernel, each calling ``K``'s unfused kernels (looked up at call time)."""

    def dense_relu_forward(x, W, b):
        # x (N, D), W (D, M), b (M,) -> y (N, M) = relu(x @ W + b)
        return K.relu_forward(K.dense_forward(x, W, b))

    def dense_relu_backward(dy, x, W, y, need_dx=True):
        # dy, y (N, M) -> (dx (N, D) or None, dW (D, M), db (M,))
        return K.dense_backward(K.relu_backward(dy, y), x, W, need_dx=need_dx)

    def conv2d_relu_forward(x, W, b, stride, pad):
        # x (N, C, H, W) -> y (N, F, OH, OW) = relu(conv2d(x))
        z, conv_cache = K.conv2d_forward(x, W, b, stride, pad)
        y = K.relu_forward(z)
        return y, (conv_cache, y)

    def conv2d_relu_backward(dy, cache, need_dx=True):
        conv_cache, y = cache
        return K.conv2d_backward(K.relu_backward(dy, y), conv_cache, need_dx=need_dx)

    def conv2d_relu_pool_forward(x, W, b, stride, pad):
        # x (N, C, H, W) -> y (N, F, OH // 2, OW // 2) = maxpool2x2(relu(conv2d(x)))
        z, conv_cache = K.conv2d_forward(x, W, b, stride, pad)
        a = K.relu_forward(z)
        y, pool_cache = K.maxpool2d_forward(a, *POOL)
        return y, (conv_cache, a, pool_cache)

    def conv2d_relu_pool_backward(dy, cache, need_dx=True):
        conv_cache, a, pool_cache = cache
        dz = K.relu_backward(K.maxpool2d_backward(dy, pool_cache), a)
        return K.conv2d_backward(dz, conv_cache, need_dx=need_dx)

    return {f.__name__: f for f in (dense_relu_forward, dense_relu_backward, conv2d_relu_forward,
                                    conv2d_relu_backward, conv2d_relu_pool_forward,
                                    conv2d_relu_pool_backward)}
