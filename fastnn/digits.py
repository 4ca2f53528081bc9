"""Your own digit images as MNIST images: ``load_digit(path_or_array) -> (1, 28, 28) float32``.

A model trained on MNIST has only seen digits prepared the way MNIST prepared them, so an
image of yours gets the same treatment (LeCun et al.: each NIST digit was "size normalized to
fit in a 20x20 pixel box while preserving their aspect ratio", anti-aliased to grey levels, and
"centered in a 28x28 image by computing the center of mass of the pixels"):

    1. grayscale, in [0, 1]                 (Pillow's luma; transparency laid on paper)
    2. polarity: white ink on black         dark ink on lighter paper is inverted; the paper is
                                            the median of the outermost pixels (the frame), and
                                            the ink is the extreme farther from it
    3. background levelled                  minus the paper's level plus 3 standard deviations of
                                            its noise (median and median absolute deviation of the
                                            frame), clipped at 0, divided by the ink maximum:
                                            paper 0, ink up to 1; a clean image keeps every grey
    4. cropped to the ink                   less specks (connected pieces with under 1% of the ink:
                                            dust), to the bounding box of the pixels above 0.2 plus
                                            a margin for the fainter edge (1 pixel once scaled);
                                            the threshold keeps JPEG's ringing out of the size
    5. scaled into a 20x20 box              the longer side becomes 20, aspect ratio kept
    6. centred by the centre of mass        pasted into 28x28 with its centre of mass on pixel
                                            (14, 14), rounded to whole pixels as MNIST's are (the
                                            test images' centres of mass: 14.0 +- 0.29 on each axis)

The resampling filter of step 5 is Pillow's BOX when shrinking (nearly always): each output
pixel is the mean of the ink it covers, the anti-aliased coverage MNIST's grey levels are, with
no ringing (LANCZOS overshoots around strokes and dips below the paper). BOX enlarging is
nearest-neighbour (blocks), so an image smaller than the box is enlarged with BILINEAR.

What this cannot fix: a thin pen line on a big photo shrinks to a faint hairline (MNIST's
strokes are 2-3 pixels wide in 28x28): draw thick, about a tenth of the digit's height.
Shadows and uneven light are not levelled; crop the photo close to the digit.
"""
import warnings
from pathlib import Path

import numpy as np

from .errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SUFFIXES = IMAGE_SUFFIXES + (".npy",)
SIZE, BOX, CENTRE = 28, 20, 14  # MNIST: 28x28 images, the digit in a 20x20 box, its centre of mass on (14, 14)
MIN_CONTRAST = 0.1  # ink this close to the paper (a tenth of the grey range) is no ink: blank paper, noise
NOISE_SIGMAS = 3  # the level subtracted: the paper's median + 3 standard deviations of its noise
INK_THRESHOLD = 0.2  # after levelling (ink maximum 1): the ink whose bounding box is scaled to the box
SPECK_FRACTION = 0.01  # a connected piece holding less of the ink than this is a speck, not ink


def find_images(paths) -> list:
    """The files to read for ``paths``: a directory becomes its image and .npy files (sorted by name,
    not recursive; a directory with none stays itself, so that load_digit reports it); a file is kept
    whatever its name (Pillow may read it, or load_digit says why not)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
            found += inside or [path]
        else:
            found.append(path)
    return found


def load_digit(source) -> np.ndarray:
    """One digit as MNIST shows it: (1, 28, 28) float32 in [0, 1], white ink on black.

    ``source``: a PNG, JPEG, BMP or GIF file (a GIF's first frame), a ``.npy`` file, a PIL image, or
    a numpy array (2-D, or (1, H, W)) of grey levels (uint8 0-255, or floats). The module docstring
    lists the steps. An unreadable file, or an image with no ink, raises DataError naming it; so does
    a file whose header declares more than it holds (a .npy) or more pixels than Pillow's limit,
    before anything of that size is allocated."""
    if isinstance(source, (str, Path)):
        name = str(source)
        gray = read_gray(Path(source))
    elif hasattr(source, "getbands"):  # a PIL image
        name = "the image"
        gray = _pil_gray(source)
    else:
        name = "the array"
        gray = array_gray(source, name)
    return mnist_style(gray, name)


# ---------------------------------------------------------------------- reading: grey levels in [0, 1]
def read_gray(path: Path) -> np.ndarray:
    """A file's grey levels, (H, W) float64 in [0, 1]; DataError naming the file if it cannot be read."""
    if path.is_dir():
        raise DataError(f"{path}: a directory with no {', '.join(s.lstrip('.') for s in SUFFIXES)} files")
    if path.suffix.lower() == ".npy":
        from .checkpoint import load_npy  # its header is checked against the file's size before allocating
        return array_gray(load_npy(path, error=DataError), str(path))
    from PIL import Image
    try:
        with warnings.catch_warnings():
            # Image.open reads the header alone; over Pillow's pixel limit (MAX_IMAGE_PIXELS, about 89 MP) it
            # only warns, and load() would then allocate what a tiny forged header asks: refuse it there
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.seek(0)  # an animated GIF: its first frame
                image.load()
                return _pil_gray(image)
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except Image.UnidentifiedImageError as e:
        raise DataError(f"{path}: not an image Pillow can read (PNG, JPEG, BMP, GIF; or a .npy array)") from e
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: too many pixels for a digit image ({e}); crop or shrink it") from e
    except (OSError, ValueError, EOFError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read the image: {e}") from e


def _pil_gray(image) -> np.ndarray:
    """A PIL image's grey levels in [0, 1]; a transparent one is laid on paper that contrasts with
    its ink (white under dark ink, black under light ink), so that the ink stays visible."""
    from PIL import ImageOps
    image = ImageOps.exif_transpose(image)  # a phone photo taken sideways
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "F"):  # 16-bit and float greys: keep their depth
        return array_gray(np.asarray(image), "the image")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        gray = np.asarray(rgba.convert("L"), dtype=np.float64) / 255
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / 255
        if alpha.min() < 1:
            ink_is_dark = (gray * alpha).sum() < 0.5 * max(alpha.sum(), 1e-12)
            paper = 1.0 if ink_is_dark else 0.0
            gray = alpha * gray + (1 - alpha) * paper
        return gray
    return np.asarray(image.convert("L"), dtype=np.float64) / 255


def array_gray(array, name) -> np.ndarray:
    """Grey levels (H, W) float64 in [0, 1] from an array: 2-D or (1, H, W); uint8 is 0-255, uint16
    0-65535, floats are taken as they are when at most 1, else as 0-255 (or 0-their maximum)."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or min(a.shape) < 1:
        raise DataError(f"{name}: expected a 2-D image or (1, H, W), got shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.float64)
    if a.dtype.kind not in "uif":
        raise DataError(f"{name}: expected numbers (grey levels), got dtype {a.dtype}")
    if a.dtype == np.uint8:
        return a / 255.0
    if a.dtype == np.uint16:
        return a / 65535.0
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"{name}: holds NaN or infinite values")
    if a.min() < 0:
        raise DataError(f"{name}: holds negative grey levels (min {a.min():g}); expected 0-1 or 0-255")
    top = a.max()
    return a if top <= 1 else a / (255.0 if top <= 255 else top)


# ---------------------------------------------------------------------- MNIST's preparation
def mnist_style(gray: np.ndarray, name="the image") -> np.ndarray:
    """Grey levels (H, W) in [0, 1], any polarity -> MNIST's (1, 28, 28) float32 (module docstring)."""
    frame = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    paper = np.median(frame)
    if paper - gray.min() > gray.max() - paper:  # the ink is darker than the paper: make it white on black
        gray, frame, paper = 1 - gray, 1 - frame, 1 - paper
    ink_max = gray.max()
    if ink_max - paper < MIN_CONTRAST:
        raise DataError(f"{name}: holds no ink (a blank or nearly constant image: no pixel differs from the "
                        f"paper by {MIN_CONTRAST:g} of the grey range or more)")
    # the paper's level and its noise (a robust standard deviation, 1.4826 * the median absolute deviation)
    noise = 1.4826 * np.median(np.abs(frame - paper))
    background = min(paper + NOISE_SIGMAS * noise, (paper + ink_max) / 2)
    ink = np.clip(gray - background, 0, None) / (ink_max - background)
    ink = drop_specks(ink)
    return centre(fit_box(ink))[None]


def drop_specks(ink: np.ndarray) -> np.ndarray:
    """``ink`` less its specks: connected pieces (8-neighbour) holding under SPECK_FRACTION of the ink's
    total, such as dust, a stray pixel of paper noise; they would widen the crop and pull the centre."""
    from scipy import ndimage
    labels, count = ndimage.label(ink > 0, structure=np.ones((3, 3)))
    if count <= 1:
        return ink
    mass = ndimage.sum_labels(ink, labels, index=np.arange(1, count + 1))
    speck = mass < SPECK_FRACTION * mass.sum()
    speck[mass.argmax()] = False  # the largest piece stays, even in an image of nothing but noise
    return np.where(np.concatenate([[False], speck])[labels], 0.0, ink)


def fit_box(ink: np.ndarray, box=BOX) -> np.ndarray:
    """The ink scaled so that its bounding box (the pixels above INK_THRESHOLD) has ``box`` pixels on its
    longer side, aspect ratio kept, with a margin of one box pixel around it for the fainter edge; ink
    maximum 1. The threshold keeps faint JPEG ringing around the strokes out of the size."""
    from PIL import Image
    strong = ink > INK_THRESHOLD
    if not strong.any():  # all of it faint (what drop_specks kept of a noisy image): the whole of it
        strong = ink > 0
    rows, cols = np.nonzero(strong.any(axis=1))[0], np.nonzero(strong.any(axis=0))[0]
    scale = box / max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    margin = int(np.ceil(1 / scale))
    ink = ink[max(rows[0] - margin, 0):rows[-1] + margin + 1, max(cols[0] - margin, 0):cols[-1] + margin + 1]
    h, w = ink.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow sizes are (width, height)
    resample = Image.Resampling.BOX if scale <= 1 else Image.Resampling.BILINEAR
    scaled = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, resample), dtype=np.float64)
    scaled = np.clip(scaled, 0, None)
    rows, cols = np.nonzero(scaled.any(axis=1))[0], np.nonzero(scaled.any(axis=0))[0]  # less empty margins
    scaled = scaled[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return scaled / scaled.max()  # > 0: every output pixel averages or interpolates ink


def centre_of_mass(image: np.ndarray):
    """(row, column) of the ink's centre of mass, in pixel indices."""
    total = image.sum()
    rows, cols = np.arange(image.shape[0]), np.arange(image.shape[1])
    return (image.sum(axis=1) @ rows) / total, (image.sum(axis=0) @ cols) / total


def centre(box: np.ndarray, size=SIZE, at=CENTRE) -> np.ndarray:
    """``box`` pasted into a (size, size) float32 image with its centre of mass on pixel (at, at),
    rounded to whole pixels; kept whole inside the image where that would push ink over an edge."""
    cy, cx = centre_of_mass(box)
    h, w = box.shape
    top = int(np.clip(np.floor(at - cy + 0.5), 0, size - h))
    left = int(np.clip(np.floor(at - cx + 0.5), 0, size - w))
    out = np.zeros((size, size), np.float32)
    out[top:top + h, left:left + w] = np.clip(box, 0, 1)
    return out
