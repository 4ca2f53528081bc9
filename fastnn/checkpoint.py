"""Model files: parameters as ``.npz`` arrays plus JSON metadata, never pickles.

Writes are atomic: a temporary file in the same directory, flushed to disk, then renamed
over the target, so a crash mid-write leaves the previous file intact.
Reads use ``allow_pickle=False`` and check every array against the architecture.
"""
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import CheckpointError, ConfigError

FORMAT = "fastnn-model"
VERSION = 1
META_KEY = "__meta__"


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_arrays(path, metadata: dict, arrays: dict):
    """Atomically write ``arrays`` and JSON ``metadata`` into one .npz file."""
    payload = {META_KEY: np.array(json.dumps(metadata))}
    payload.update({key: np.ascontiguousarray(value) for key, value in arrays.items()})
    atomic_write(path, lambda f: np.savez(f, **payload))


def load_arrays(path, expected_format=FORMAT):
    """(metadata, {name: array}) from a file written by ``save_arrays``; refuses pickles."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except ValueError as e:  # object arrays need pickle: refused
        raise CheckpointError(f"{path}: holds a pickled object, which fastnn never loads (it could run code)") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable .npz file ({e}); it may be truncated or corrupt") from e
    if META_KEY not in arrays:
        raise CheckpointError(f"{path}: no {META_KEY} entry: not a fastnn file")
    try:
        metadata = json.loads(str(arrays.pop(META_KEY)))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its metadata is not valid JSON") from e
    if not isinstance(metadata, dict) or metadata.get("format") != expected_format:
        raise CheckpointError(f"{path}: not a {expected_format} file (format {metadata.get('format')!r})"
                              if isinstance(metadata, dict) else f"{path}: malformed metadata")
    if metadata.get("version") != VERSION:
        raise CheckpointError(f"{path}: file version {metadata.get('version')!r}, this fastnn reads version {VERSION}")
    for key, value in arrays.items():
        if value.dtype.kind not in "fiub":
            raise CheckpointError(f"{path}: array {key!r} has dtype {value.dtype}, not a number type")
    return metadata, arrays


def save_model(path, model, metadata=None):
    """Save ``model``'s architecture and parameters (and any extra JSON ``metadata``)."""
    meta = {"format": FORMAT, "version": VERSION, "model": model.config(), **(metadata or {})}
    save_arrays(path, meta, model.state_arrays())


def model_from_metadata(path, metadata, arrays):
    from .model import Sequential
    try:
        model = Sequential.from_config(metadata["model"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: malformed architecture in its metadata ({e!r})") from e
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from e
    model_arrays = {k: v for k, v in arrays.items() if k.startswith(("param/", "buffer/"))}
    expected = set(model.state_arrays())
    unexpected = set(model_arrays) - expected
    if unexpected:
        raise CheckpointError(f"{path}: arrays {sorted(unexpected)} do not belong to its architecture")
    try:
        model.load_state_arrays(model_arrays)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e
    return model


def load_model(path):
    """(model, metadata) from a file written by ``save_model``."""
    metadata, arrays = load_arrays(path)
    return model_from_metadata(path, metadata, arrays), metadata
