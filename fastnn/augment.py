"""Data augmentation: small random translations and rotations of each training image.

``RandomAffine`` draws one affine map per image on the host, from the trainer's own seeded
generator, and the backend's ``warp_affine`` kernel applies them (bilinear, zeros outside), so a
seed gives the same images on every CPU backend, and a resumed run the same images as an unbroken
one. On cuda the trainer's generator lives on the device (fastnn/backends/cuda/rng.py) and draws
the maps there, with the same distribution but its own numbers.

    trainer = fastnn.Trainer(model, optimizer, augment=fastnn.RandomAffine(shift=2, degrees=10))
"""
import numpy as np

from . import backends
from .errors import ConfigError, ShapeError


class RandomAffine:
    """Each image rotated by an angle drawn uniformly from [-degrees, degrees] about its centre,
    then shifted by (dx, dy), each drawn uniformly from [-shift, shift] pixels.

    MNIST's digits sit in a 20x20 box centred in 28x28, so 2 pixels and 10 degrees keep every
    stroke inside the frame; the labels stay as they are."""

    def __init__(self, shift=2.0, degrees=10.0):
        for name, value, limit in (("shift", shift, 8), ("degrees", degrees, 180)):
            if not (isinstance(value, (int, float)) and 0 <= value <= limit):
                raise ConfigError(f"RandomAffine: {name} must be a number in [0, {limit}], got {value!r}")
        self.shift, self.degrees = float(shift), float(degrees)

    def thetas(self, n, rng, height, width):
        """(n, 2, 3) float32 maps from an output pixel (column j, row i, 1) to the source point
        (u, v) that warp_affine samples: the inverse of "rotate about the centre c, then shift by t",
        src = R(-angle) @ (dst - c - t) + c."""
        angle = np.deg2rad(rng.uniform(-self.degrees, self.degrees, n))
        shift = rng.uniform(-self.shift, self.shift, (n, 2))  # (dx, dy) per image
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        cos, sin = np.cos(angle), np.sin(angle)
        inverse = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1)  # (n, 2, 2) R(-angle)
        offset = centre - np.einsum("nij,nj->ni", inverse, centre + shift)
        return np.concatenate([inverse, offset[:, :, None]], axis=2).astype(np.float32)

    def __call__(self, x, rng):
        """x (N, C, H, W) in the active backend's memory -> a warped copy, the same shape."""
        if len(x.shape) != 4:
            raise ShapeError(f"RandomAffine: expected images (N, C, H, W), got shape {tuple(x.shape)}; "
                             "augmentation needs a model whose input is an image, not a flat vector")
        n, _, height, width = x.shape
        K = backends.get()
        draw = getattr(rng, "random_affine", None)  # a device generator (cuda's) draws the maps there
        theta = (draw(n, self.shift, self.degrees, height, width) if draw is not None
                 else K.to_device(self.thetas(n, rng, height, width)))
        return K.warp_affine(x, theta)

    def config(self):
        return {"shift": self.shift, "degrees": self.degrees}

    def __repr__(self):
        return f"RandomAffine(shift={self.shift:g}, degrees={self.degrees:g})"

