"""MNIST and Fashion-MNIST: find the IDX files, verify their checksums, download if absent.

Where it looks, in order: an explicit directory, then FASTNN_DATA, then the user cache
directory ($XDG_CACHE_HOME/fastnn, else ~/.cache/fastnn); in each, the directory itself
and its <dataset>/ subdirectory, for each file its .gz or its uncompressed form.
If none holds the files, they are downloaded into the cache from the known mirrors in
turn, each verified by the MD5 of its decompressed content before use.
"""
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import config
from ..errors import ConfigError, DataError
from .idx import decompress, parse_idx

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# The decompressed size of each (the IDX header and the bytes of 60,000 or 10,000 28x28 images or labels), the
# same in both data sets: a file is never inflated past it, so a gzip bomb in the data directory inflates nothing big.
CONTENT_BYTES = dict(zip(FILES, (16 + 60000 * 28 * 28, 8 + 60000, 16 + 10000 * 28 * 28, 8 + 10000)))

# MD5 of each file's decompressed content: the same for every faithful copy, however compressed.
DATASETS = {
    "mnist": {
        "md5": dict(zip(FILES, ("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
                                "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637"))),
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/",
                    "http://yann.lecun.com/exdb/mnist/"),
    },
    "fashion-mnist": {
        "md5": dict(zip(FILES, ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
                                "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"))),
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    },
}


def _check_dataset(dataset):
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[dataset]


def search_dirs(dataset, data_dir=None) -> list[Path]:
    """The directories searched, in order."""
    roots = [Path(data_dir).expanduser() if data_dir else None, config.data_dir(), config.cache_dir()]
    dirs = []
    for root in filter(None, roots):
        for d in (root / dataset, root):
            if d not in dirs:
                dirs.append(d)
    return dirs


def _file_in(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def find(dataset="mnist", data_dir=None) -> dict | None:
    """{file name: path} from the first directory that holds all four files, else None."""
    _check_dataset(dataset)
    for directory in search_dirs(dataset, data_dir):
        paths = {name: _file_in(directory, name) for name in FILES}
        if all(paths.values()):
            return paths
    return None


def verified_content(path: Path, expected_md5: str, name=None, max_bytes=None) -> bytes:
    """The decompressed bytes of ``path``, after checking their MD5; ``name`` for messages (default: the path).
    ``max_bytes``: the size the content should have; no more than one byte past it is inflated (a longer
    content then fails the checksum)."""
    name = name or str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{name}: cannot read it ({e.strerror or e})") from e
    content = decompress(raw, name, limit=max_bytes)
    digest = hashlib.md5(content).hexdigest()
    if digest != expected_md5:
        raise DataError(f"{name}: checksum mismatch (md5 {digest}, expected {expected_md5}): the file is "
                        f"corrupt, truncated or from another data set; delete it so fastnn downloads "
                        f"a fresh copy, or replace it with a good one")
    return content


def _fetch(url, target: Path, expected_md5: str, progress: bool, max_bytes=None):
    """Stream ``url`` into ``target``: written under a temporary name, renamed only once complete
    and its checksum is right, so a bad download never replaces or leaves a file."""
    with urllib.request.urlopen(url, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                                                  disable=not progress, leave=False) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
            verified_content(Path(tmp), expected_md5, name=url, max_bytes=max_bytes)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def download(dataset="mnist", target_dir=None, mirrors=None, progress=True) -> dict:
    """Download the four files into ``target_dir`` (default: the cache), trying each mirror in turn.

    A file is kept only once its checksum is right. Returns {file name: path}.
    """
    spec = _check_dataset(dataset)
    target_dir = Path(target_dir) if target_dir else config.cache_dir() / dataset
    target_dir.mkdir(parents=True, exist_ok=True)
    mirrors = tuple(mirrors or spec["mirrors"])
    paths = {}
    for name in FILES:
        target = target_dir / f"{name}.gz"
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{name}.gz"
            try:
                _fetch(url, target, spec["md5"][name], progress, CONTENT_BYTES[name])
                paths[name] = target
                break
            # HTTPException: the connection broke mid-file; ValueError: a malformed URL
            except (urllib.error.URLError, OSError, http.client.HTTPException, DataError, ValueError) as e:
                failures.append(f"{url}: {getattr(e, 'reason', e)}")
        else:
            raise DataError(f"could not download {name}.gz from any mirror: " + "; ".join(failures))
    return paths


def load_mnist(dataset="mnist", data_dir=None, download_missing=True, progress=True):
    """(x_train, y_train, x_test, y_test): images float32 in [0, 1] shaped (N, 1, 28, 28), labels int64."""
    spec = _check_dataset(dataset)
    paths = find(dataset, data_dir)
    if paths is None:  # one line, as every error the command line prints
        searched = ", ".join(str(d) for d in search_dirs(dataset, data_dir))
        how = (f"put the four files ({', '.join(f + '.gz' for f in FILES)}) in one of these directories, "
               f"or point FASTNN_DATA or --data at a directory that holds them")
        if not download_missing:
            raise DataError(f"{dataset} not found (looked in {searched}): {how}")
        try:
            paths = download(dataset, progress=progress)
        except DataError as e:
            raise DataError(f"{dataset} not found and the download failed (looked in {searched}; {e}): "
                            f"{how}") from e
    arrays = [parse_idx(verified_content(paths[name], spec["md5"][name], max_bytes=CONTENT_BYTES[name]),
                        str(paths[name])) for name in FILES]
    train_images, train_labels, test_images, test_labels = arrays

    def images(a):
        return (a.astype(np.float32) / np.float32(255.0)).reshape(len(a), 1, 28, 28)

    return images(train_images), train_labels.astype(np.int64), images(test_images), test_labels.astype(np.int64)
