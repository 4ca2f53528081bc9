"""The Numba CPU backend: every contract kernel compiled with ``@njit(cache=True)``.

Parallel loops (``prange``) run on Numba's threads, one parallel region per kernel call;
matrix products call SciPy's BLAS sgemm from inside those loops (fastnn/backends/numba/blas.py),
single-threaded, so only one thread pool ever runs (fastnn/threads.py).
Where nothing beats the reference for a kernel, the module says so and uses it.
"""
from ... import config

# the kernels call SciPy's BLAS; set it up before it loads (see config.py).
config.quiet_idle_blas_threads()
try:
    import scipy.linalg.cython_blas  # noqa: F401
except ImportError as e:
    from ...errors import BackendUnavailableError
    raise BackendUnavailableError(
        "backend 'numba' needs SciPy: its kernels call BLAS through scipy.linalg.cython_blas; "
        "install it with: pip install scipy") from e

from .activation import (dropout_backward, dropout_forward, dropout_mask, relu_backward,
                         relu_forward, sigmoid_backward, sigmoid_forward, tanh_backward,
                         tanh_forward)
from .arrays import gather, to_device, to_host, zeros
from .conv import CONV_ALGORITHMS, col2im, conv2d_algorithm, conv2d_backward, conv2d_forward, im2col
from .dense import dense_backward, dense_forward
from .fused import (conv2d_relu_backward, conv2d_relu_forward, conv2d_relu_pool_backward,
                    conv2d_relu_pool_forward, dense_relu_backward, dense_relu_forward)
from .loss import (count_correct, mse_loss, mse_loss_backward, softmax, softmax_cross_entropy,
                   softmax_cross_entropy_backward)
from .norm import (batchnorm_backward, batchnorm_forward, batchnorm_inference,
                   running_average_update)
from .optim import (adadelta_update, adagrad_update, adam_update, momentum_update,
                    nesterov_update, rmsprop_update, sgd_update)
from .pool import avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward

NAME = "numba"

from ... import threads  # noqa: E402
threads.apply(NAME)  # BLAS single-threaded from now on: the kernels call it inside prange loops
