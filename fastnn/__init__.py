"""fastnn: readable MNIST CNNs (the textbook's layers and im2col convolution) whose hot
kernels are compiled: NumPy reference, Numba CPU, Cython and Numba CUDA backends behind
one kernel contract. ``FASTNN_BACKEND=numpy|numba|cython|cuda`` chooses one.

    import fastnn
    x_train, y_train, x_test, y_test = fastnn.load_mnist()
    model = fastnn.build_model("simple-cnn", seed=0)
    trainer = fastnn.Trainer(model, fastnn.make_optimizer("adam", lr=0.003), batch_size=100, seed=0,
                             schedule=fastnn.schedules.OneCycle(), label_smoothing=0.1)
    trainer.fit(x_train, y_train, epochs=5, test=(x_test, y_test))   # `fastnn train`'s defaults: 99%

Importing fastnn loads no backend; the first layer call loads the active one.
"""
__version__ = "0.1.0"

from . import backends, schedules
from .augment import RandomAffine
from .checkpoint import load_model, save_model
from .data import load_mnist
from .digits import load_digit
from .errors import (BackendUnavailableError, CheckpointError, ConfigError, DataError, FastnnError, ShapeError,
                     TrainingDivergedError)
from .gradcheck import gradient_check, numerical_gradient
from .layers import AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh
from .losses import MeanSquaredError, SoftmaxCrossEntropy
from .model import Sequential
from .models import build as build_model
from .onnx_export import to_onnx
from .optim import SGD, AdaGrad, Adadelta, Adam, Momentum, Nesterov, RMSprop
from .optim import make as make_optimizer
from .regularization import L1, L2, ElasticNet
from .threads import set_threads
from .train import Trainer
