"""Random numbers drawn on the GPU: the trainer's shuffles, dropout masks and augmentations.

Beyond the contract (the CPU backends use NumPy's Generator): ``Generator(seed)`` holds
STREAMS xoroshiro128p generators (``numba.cuda.random``) in device memory, seeded from the
run's seed, and draws where the data is, so a training step uploads nothing:

    rng = Generator([seed, 2])
    order = rng.permutation(n)               # device int64 (n,): Fisher-Yates, one thread
    mask = rng.dropout_mask((N, D), 0.5)     # device float32: 0 or 1 / (1 - p)
    theta = rng.random_affine(N, 2.0, 10.0, 28, 28)   # device (N, 2, 3), RandomAffine's maps

It reads and sets its state the way NumPy's does, ``rng.bit_generator.state`` (a JSON-able
dict: the streams' 16 bytes each, in hex), so checkpoints keep it beside the other
generators and a resumed run draws exactly what the unbroken one would have. Element i of a
draw always comes from stream ``i % streams``, in order, whatever the launch size, so a
state gives the same numbers on every launch configuration.

The numbers differ from NumPy's: a cuda run's batches, masks and warps are its own (the same
for the same seed), not those a CPU backend draws for that seed.
"""
import math
import warnings

import numpy as np
from numba import cuda, float32, int64, uint64
from numba.cuda.random import xoroshiro128p_dtype, xoroshiro128p_next

from . import arrays
from .arrays import SIMULATOR, blocks, empty, flat

# Streams per generator: on a GPU enough threads to draw a dropout mask quickly (each thread
# draws every STREAMS-th element); in the simulator, where a thread is a Python thread, one
# small block. A saved state carries its own count, so either kind of run can resume the other.
STREAMS = 32 if SIMULATOR else 2048

if SIMULATOR:  # the simulator runs xoroshiro's uint64 arithmetic in NumPy scalars, which warn as they wrap
    warnings.filterwarnings("ignore", message="overflow encountered in scalar", category=RuntimeWarning)


def initial_states(seed, streams):
    """Host xoroshiro128p states of ``streams`` streams from a NumPy-style seed (an int or a
    sequence of ints): NumPy's SeedSequence spreads the seed over all 128 bits of every stream.
    (numba's create_xoroshiro128p_states jumps each stream 2**64 steps past the last instead,
    which the simulator takes seconds to do.) Streams started at random points of the 2**128
    period overlap with a chance of about streams**2 * draws / 2**128."""
    words = np.random.SeedSequence(seed).generate_state(2 * streams, np.uint64).reshape(streams, 2)
    words[(words == 0).all(axis=1), 1] = 1  # an all-zero state would draw zeros for ever
    states = np.empty(streams, dtype=xoroshiro128p_dtype)
    states["s0"], states["s1"] = words[:, 0], words[:, 1]
    return states


# ---------------------------------------------------------------------------------- kernels

TWO_TO_MINUS_24 = np.float32(2.0 ** -24)
RADIANS = np.float32(np.pi / 180.0)


@cuda.jit(device=True)
def uniform(states, s):
    # a float32 uniform in [0, 1) from stream s: the top 24 bits of its next 64, in float32 only
    # (numba's xoroshiro128p_uniform_float32 goes through float64)
    return float32(xoroshiro128p_next(states, s) >> uint64(40)) * TWO_TO_MINUS_24


@cuda.jit
def permutation_kernel(order, states):
    # order (n,) int64 <- a uniformly random permutation of 0..n-1, drawn by stream 0
    # NumPy: order = np.arange(n); for i in n-1..1: j = randint(0, i + 1); swap order[i], order[j]
    # (Fisher-Yates: one thread, n steps; a 60000-image epoch takes milliseconds on a GPU)
    if cuda.grid(1) == 0:
        n = order.size
        for i in range(n):
            order[i] = i
        for i in range(n - 1, 0, -1):
            j = int64(xoroshiro128p_next(states, 0) % uint64(i + 1))   # bias below n / 2**64
            swap = order[i]
            order[i] = order[j]
            order[j] = swap


@cuda.jit
def dropout_mask_kernel(mask, states, p, scale):
    # mask (n,) flat float32 = (uniform >= p) * scale; element i drawn by stream i % streams
    # NumPy: mask = (rng.random(n) >= p) * np.float32(1 / (1 - p))
    s = cuda.grid(1)
    if s < states.size:
        for i in range(s, mask.size, states.size):
            mask[i] = scale if uniform(states, s) >= p else float32(0.0)


@cuda.jit
def random_affine_kernel(theta, states, shift, degrees, centre_x, centre_y):
    # theta (N, 2, 3) float32: image n's map, drawn by stream n % streams (angle, then dx, then dy)
    # NumPy (fastnn.augment.RandomAffine.thetas): angle ~ U(-degrees, degrees) in radians,
    #   (dx, dy) ~ U(-shift, shift); inverse = R(-angle) = [[cos, sin], [-sin, cos]];
    #   offset = c - inverse @ (c + (dx, dy)); theta[n] = [inverse | offset]
    s = cuda.grid(1)
    if s < states.size:
        for n in range(s, theta.shape[0], states.size):
            angle = (float32(2.0) * uniform(states, s) - float32(1.0)) * degrees * RADIANS
            dx = (float32(2.0) * uniform(states, s) - float32(1.0)) * shift
            dy = (float32(2.0) * uniform(states, s) - float32(1.0)) * shift
            cos, sin = math.cos(angle), math.sin(angle)
            px, py = centre_x + dx, centre_y + dy
            theta[n, 0, 0] = cos
            theta[n, 0, 1] = sin
            theta[n, 0, 2] = centre_x - (cos * px + sin * py)
            theta[n, 1, 0] = -sin
            theta[n, 1, 1] = cos
            theta[n, 1, 2] = centre_y - (-sin * px + cos * py)


# ------------------------------------------------------------------------------- the generator

class Generator:
    """STREAMS xoroshiro128p generators on the device, seeded from ``seed`` (an int or a
    sequence of ints, as NumPy's default_rng takes). See the module's docstring."""

    def __init__(self, seed=None, streams=None):
        self.states = cuda.to_device(initial_states(seed, STREAMS if streams is None else int(streams)))

    @property
    def streams(self) -> int:
        return self.states.size

    def _launch(self):
        # one thread per stream, whatever the stream count
        return blocks(self.streams), arrays.THREADS

    # ----------------------------------------------------------------- state, as NumPy's
    @property
    def bit_generator(self):
        """Itself: ``rng.bit_generator.state`` reads and sets the state, as on NumPy's Generator."""
        return self

    @property
    def state(self) -> dict:
        """The streams' state, copied to the host: {"bit_generator": "xoroshiro128p", "streams": n,
        "state": hex}."""
        host = self.states.copy_to_host()
        return {"bit_generator": "xoroshiro128p", "streams": int(host.size), "state": host.tobytes().hex()}

    @state.setter
    def state(self, value):
        if not isinstance(value, dict) or value.get("bit_generator") != "xoroshiro128p":
            kind = value.get("bit_generator") if isinstance(value, dict) else type(value).__name__
            raise ValueError(f"the cuda backend draws with xoroshiro128p on the device, and this state is "
                             f"{kind}'s (saved by a run on a CPU backend?): resume it on the backend it was made on")
        try:
            host = np.frombuffer(bytes.fromhex(value["state"]), dtype=xoroshiro128p_dtype)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"a xoroshiro128p state holds hex digits, 16 bytes per stream: {e}") from e
        if host.size != value.get("streams") or host.size == 0:
            raise ValueError(f"a xoroshiro128p state of {value.get('streams')} streams holds {host.size}")
        if host.size == self.streams:
            self.states.copy_to_device(host)
        else:
            self.states = cuda.to_device(host)

    # ----------------------------------------------------------------- draws
    def permutation(self, n):
        """A random permutation of 0..n-1 as a new device int64 array (n,)."""
        n = int(n)
        order = empty(n, np.int64)
        if n:
            permutation_kernel[1, 1](order, self.states)
        return order

    def dropout_mask(self, shape, p):
        """float32 device array of ``shape``: each element 1 / (1 - p) with probability 1 - p, else 0."""
        mask = empty(tuple(shape))
        if mask.size:
            dropout_mask_kernel[self._launch()](flat(mask), self.states, np.float32(p),
                                                np.float32(1.0 / (1.0 - p)))
        return mask

    def random_affine(self, n, shift, degrees, height, width):
        """(n, 2, 3) float32 device maps for fastnn.augment.RandomAffine: rotate by U(-degrees,
        degrees) about the centre, then shift by U(-shift, shift) pixels in x and in y (inverted:
        output pixel -> source point, as warp_affine takes them)."""
        theta = empty((int(n), 2, 3))
        if n:
            random_affine_kernel[self._launch()](theta, self.states, np.float32(shift), np.float32(degrees),
                                                 np.float32((width - 1) / 2), np.float32((height - 1) / 2))
        return theta

    def __repr__(self):
        return f"cuda.Generator({self.streams} xoroshiro128p streams)"

