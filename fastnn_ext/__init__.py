"""fastnn's compiled kernels (Cython + OpenMP): the engine of the ``cython`` backend.

One extension module per kernel family, each mirroring the NumPy reference module of
the same name in fastnn/backends/numpy/:

    _arrays      gather                              (arrays.py)
    _dense       dense forward/backward via BLAS      (dense.py)
    _conv        im2col + GEMM conv, im2col, col2im  (conv.py)
    _winograd    Winograd F(2x2,3x3), F(4x4,3x3) conv (winograd.py)
    _pool        max/avg pooling                      (pool.py)
    _activation  relu, sigmoid, tanh, dropout         (activation.py)
    _loss        softmax cross-entropy, MSE, accuracy (loss.py)
    _optim       optimizer updates, running average  (optim.py, norm.py)

Kernels take their outputs first (allocated by the adapter in fastnn/backends/cython/),
then inputs, then sizes. The modules exist only once built: ``pip install -e .`` or
``python setup.py build_ext --inplace``.

Each module's ``OPENMP`` says whether it was compiled with OpenMP. Without it (the serial build:
no OpenMP in the compiler, or ``FASTNN_OPENMP=0``, see setup.py) the same kernels run their loops
on one thread, with the same results; _omp_shim.h stands in for omp.h.
"""
