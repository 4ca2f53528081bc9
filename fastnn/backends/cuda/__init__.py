"""The CUDA backend: Numba CUDA kernels, data resident on the device.

Every kernel takes and returns Numba device arrays; ``to_device`` / ``to_host`` are real
copies, and only the losses (a float) and count_correct (an int) bring a scalar back.
Kernel outputs come from a pool (arrays.py), so a training step allocates nothing once
the first has run; the Trainer draws its randomness on the device (``Generator``) and reads
its losses every few steps (``LossLog``), so its steps copy nothing either way.
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

from ..contract import kernels_of  # noqa: E402

# every contract kernel, from the modules contract.MODULES names; the fused ones are the
# composition of the unfused (fastnn/backends/composed.py)
globals().update(kernels_of(__name__))
# beyond the contract: what the Trainer uses when a backend has it (fastnn/train.py), and tools
from .arrays import SIMULATOR, free_pool, nonfinite, pool_stats, synchronize  # noqa: E402,F401
from .loss import LossLog  # noqa: E402,F401   the losses of a few steps, read back together
from .rng import Generator  # noqa: E402,F401  xoroshiro128p on the device: shuffles, dropout, augmentation

NAME = "cuda"
