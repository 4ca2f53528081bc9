"""The Cython backend: the compiled extension fastnn_ext (typed memoryviews, nogil,
OpenMP prange, BLAS from SciPy's cython_blas), behind the same module names as the
NumPy reference. Kernels kept from the reference say so in their module.
"""
from ... import config

config.quiet_idle_blas_threads()  # before fastnn_ext loads SciPy's BLAS (see config.py)
try:
    from fastnn_ext import (_activation, _arrays, _conv, _conv_direct, _dense, _loss,  # noqa: F401
                            _optim, _pool, _winograd)
except ImportError as e:
    from ...errors import BackendUnavailableError

    raise BackendUnavailableError(
        f"the cython backend needs the compiled extension fastnn_ext, which cannot be "
        f"imported ({e}). Build it with `pip install -e .` (or `python setup.py build_ext "
        f"--inplace`) from the fastnn source tree; that needs a C compiler with OpenMP, "
        f"Cython and SciPy") from e

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

NAME = "cython"

from ... import threads  # noqa: E402
threads.apply(NAME)  # BLAS single-threaded from now on: the kernels call it inside OpenMP loops
