"""The CUDA backend: Numba CUDA kernels, data resident on the device.

Every kernel takes and returns Numba device arrays; ``to_device`` / ``to_host`` are real
copies, and only the losses (a float) and count_correct (an int) bring a scalar back.
Each module mirrors its twin in fastnn/backends/numpy/.

Without an NVIDIA GPU the kernels run in Numba's CUDA simulator when NUMBA_ENABLE_CUDASIM=1
is set before numba is first imported (slow: tests only). With neither, importing this
package raises BackendUnavailableError saying what to do instead.
"""
from ...errors import BackendUnavailableError

_ALTERNATIVES = ("use a CPU backend instead (FASTNN_BACKEND=numba or FASTNN_BACKEND=cython), "
                 "or run the kernels in Numba's CUDA simulator (slow, for tests): set "
                 "NUMBA_ENABLE_CUDASIM=1 before Python starts")

try:
    from numba import cuda
except ImportError as e:
    raise BackendUnavailableError(
        f"the cuda backend needs numba-cuda, which is not installed ({e}): "
        f'pip install -e ".[cuda]"; or {_ALTERNATIVES}') from e

if not cuda.is_available():
    try:  # the driver's own words for why there is no GPU
        cuda.current_context()
        cause = None
    except Exception as e:  # CudaSupportError and friends: kept as the cause
        cause = e
    raise BackendUnavailableError(
        "the cuda backend needs an NVIDIA GPU with a working driver, and none is usable here"
        + (f" ({' '.join(str(cause).split()).rstrip(' :')})" if cause is not None and str(cause).strip() else "")
        + f"; {_ALTERNATIVES}") from cause

from .activation import (dropout_backward, dropout_forward, dropout_mask, relu_backward,  # noqa: E402
                         relu_forward, sigmoid_backward, sigmoid_forward, tanh_backward,
                         tanh_forward)
from .arrays import SIMULATOR, gather, synchronize, to_device, to_host, zeros  # noqa: E402
from .conv import col2im, conv2d_algorithm, conv2d_backward, conv2d_forward, im2col  # noqa: E402
from .dense import dense_backward, dense_forward  # noqa: E402
from .loss import (count_correct, mse_loss, mse_loss_backward, softmax, softmax_cross_entropy,  # noqa: E402
                   softmax_cross_entropy_backward)
from .norm import (batchnorm_backward, batchnorm_forward, batchnorm_inference,  # noqa: E402
                   running_average_update)
from .optim import (adadelta_update, adagrad_update, adam_update, momentum_update,  # noqa: E402
                    nesterov_update, rmsprop_update, sgd_update)
from .pool import avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward  # noqa: E402

NAME = "cuda"

# the fused kernels: the composition of the kernels above (fastnn/backends/composed.py)
import sys as _sys  # noqa: E402

from ..composed import fused_kernels as _fused_kernels  # noqa: E402

globals().update(_fused_kernels(_sys.modules[__name__]))
