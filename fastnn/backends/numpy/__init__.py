"""The pure-NumPy reference backend: the specification every other backend is tested against."""
from .activation import (dropout_backward, dropout_forward, dropout_mask, relu_backward,
                         relu_forward, sigmoid_backward, sigmoid_forward, tanh_backward,
                         tanh_forward)
from .arrays import gather, to_device, to_host, zeros
from .conv import col2im, conv2d_algorithm, conv2d_backward, conv2d_forward, im2col
from .dense import dense_backward, dense_forward
from .loss import (count_correct, mse_loss, mse_loss_backward, softmax, softmax_cross_entropy,
                   softmax_cross_entropy_backward)
from .norm import (batchnorm_backward, batchnorm_forward, batchnorm_inference,
                   running_average_update)
from .optim import (adadelta_update, adagrad_update, adam_update, momentum_update,
                    nesterov_update, rmsprop_update, sgd_update)
from .pool import avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward

NAME = "numpy"

# the fused kernels: the composition of the kernels above (fastnn/backends/composed.py)
import sys as _sys  # noqa: E402

from ..composed import fused_kernels as _fused_kernels  # noqa: E402

globals().update(_fused_kernels(_sys.modules[__name__]))
