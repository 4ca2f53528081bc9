"""Model and checkpoint files: parameters as ``.npz`` arrays plus JSON metadata, never pickles.

Writes are atomic: a temporary file in the same directory, flushed to disk, then renamed
over the target, so a crash mid-write leaves the previous file intact.
Reads use ``allow_pickle=False`` and check every array against the architecture.
A model file (format "fastnn-model") holds a model; a checkpoint ("fastnn-checkpoint",
written by ``Trainer.checkpoint``) holds a model plus everything needed to resume its training.

Every array fastnn reads from a user's file goes through one check before anything is allocated
(``check_npy_header``): the sizes its .npy header declares must be what the file holds. NumPy
allocates the declared array first and reads into it after, so a 3 KB file declaring
(100000, 100000) float32 would ask for 37 GiB. The .npz entries here and ``load_npy`` (the .npy
images of ``fastnn predict``) use it; IDX files check their header the same way (fastnn/data/idx.py).
"""
import io
import json
import os
import signal
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import config
from .errors import CheckpointError, ConfigError, ShapeError
from .layers import LAYER_TYPES
from .model import Sequential

FORMAT = "fastnn-model"
CHECKPOINT_FORMAT = "fastnn-checkpoint"
VERSION = 1
META_KEY = "__meta__"
MODEL_PREFIXES = ("param/", "buffer/")

_writes = 0  # atomic writes by this process, counted for FASTNN_TEST_KILL=write:N


def test_kill(kind, count):
    """Crash tests only: SIGKILL this process (no clean-up at all) if FASTNN_TEST_KILL names this point
    (or SIGSTOP it, for stop:N after step N: a hung process)."""
    point = config.test_kill_point()
    if point == (kind, count):
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "step" and point == ("stop", count):
        os.kill(os.getpid(), signal.SIGSTOP)


def _mode_for(path):
    """The permissions ``path`` has, or those a newly created file would get (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to someone else
        return True
    return True


def remove_stale_temporaries(path):
    """Delete the temporary files that writes to ``path`` left behind when their process was killed
    mid-write: ``.<name>.<pid>.<random>.tmp`` whose process is gone (a live writer's is kept)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def atomic_write(path, write):
    """Call ``write(file)``, then put what it wrote at ``path`` atomically: into a temporary file
    beside ``path`` (named after this process, so that a later write can tell a dead writer's
    leftover from a live one's and remove it), fsync it, then rename it to ``path``."""
    global _writes
    path = Path(path)
    buffer = io.BytesIO()  # serialise first: a failing ``write`` never creates a file
    write(buffer)
    data = buffer.getbuffer()
    _writes += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if config.test_kill_point() == ("write", _writes):  # crash tests: die with half the file written
                f.write(data[:len(data) // 2])
                f.flush()
                test_kill("write", _writes)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))  # mkstemp makes it private (0600); give it the mode a new file gets
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
    """(metadata, {name: array}) from a file written by ``save_arrays``; refuses pickles.

    ``expected_format``: the format name the metadata must carry, or a tuple of accepted names.
    Whatever is wrong with the file, the error is a CheckpointError that names it.
    """
    path = Path(path)
    formats = (expected_format,) if isinstance(expected_format, str) else tuple(expected_format)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a model file; give the .npz file in it")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        starts_like_zip = f.read(4) == b"PK\x03\x04"
    if not starts_like_zip or not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a .npz file (no zip header and directory): it is truncated, "
                              f"corrupt, or not a fastnn file at all")
    check_array_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except ValueError as e:
        if "allow_pickle" in str(e):  # an object array: loading it would unpickle, which can run code
            raise CheckpointError(f"{path}: holds a pickled object array, which fastnn never loads "
                                  f"(unpickling can run code)") from e
        raise CheckpointError(f"{path}: not a readable .npz file ({e}); it may be truncated or corrupt") from e
    except Exception as e:  # zipfile and numpy raise many types for damaged bytes (BadZipFile, EOFError, ...)
        raise CheckpointError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}); "
                              f"it may be truncated or corrupt") from e
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: entry {key!r} is not a .npy array")
    if META_KEY not in arrays:
        raise CheckpointError(f"{path}: no {META_KEY} entry: not a fastnn file")
    try:
        metadata = json.loads(str(arrays.pop(META_KEY)))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its metadata is not valid JSON") from e
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: malformed metadata (a JSON {type(metadata).__name__}, not an object)")
    if metadata.get("format") not in formats:
        hint = ""
        if metadata.get("format") == FORMAT and CHECKPOINT_FORMAT in formats:
            hint = "; a model file cannot resume training: resume from a file written with --checkpoint"
        raise CheckpointError(f"{path}: not a {' or '.join(formats)} file (format {metadata.get('format')!r}){hint}")
    if metadata.get("version") != VERSION:
        raise CheckpointError(f"{path}: file version {metadata.get('version')!r}, this fastnn reads version {VERSION}")
    for key, value in arrays.items():
        if value.dtype.kind not in "fiub":
            raise CheckpointError(f"{path}: array {key!r} has dtype {value.dtype}, not a number type")
    return metadata, arrays


def check_array_sizes(path):
    """Refuse, before anything is allocated, a .npy entry whose header declares more (or fewer) bytes
    than the entry holds: NumPy allocates the declared array first, then reads into it, so a
    1 KB file could otherwise ask for gigabytes. What an entry holds is what the file stores for it:
    the unpacked size in the zip directory is the forger's word like the .npy header, and a
    compressed entry's can be a thousand times the file's (a zip bomb), so fastnn, which writes its
    files uncompressed, reads only stored entries whose directory sizes agree."""
    file_bytes = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    raise CheckpointError(f"{path}: entry {info.filename!r} is compressed (zip method "
                                          f"{info.compress_type}); fastnn writes its files uncompressed and "
                                          f"inflates nothing (a compressed entry can unpack to any size): "
                                          f"write it with np.savez, not np.savez_compressed")
                if info.header_offset + info.compress_size > file_bytes:
                    raise CheckpointError(f"{path}: entry {info.filename!r} claims {info.compress_size:,} stored "
                                          f"bytes, more than the whole file's {file_bytes:,}: the file is "
                                          f"truncated or forged")
                if info.file_size != info.compress_size:
                    raise CheckpointError(f"{path}: entry {info.filename!r} unpacks to {info.file_size:,} bytes "
                                          f"by the zip directory but stores {info.compress_size:,}: the file "
                                          f"is corrupt or forged")
                with archive.open(info) as f:
                    if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                        continue  # not a .npy entry: load_arrays refuses it below
                    f.seek(0)
                    check_npy_header(f, info.file_size, f"{path}: entry {info.filename!r}")
    except CheckpointError:
        raise
    except Exception as e:  # a damaged zip or .npy header: BadZipFile, ValueError, EOFError, ...
        raise CheckpointError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}); "
                              f"it may be truncated or corrupt") from e


def check_npy_header(f, size, name, error=CheckpointError):
    """(shape, dtype) from the .npy header at the start of ``f``, which holds ``size`` bytes in all,
    once the header is found to declare exactly the bytes that follow it; else ``error`` naming
    ``name`` ("x.npy", "x.npz: entry 'param/0.W.npy'"). Reads the header alone, allocates nothing.
    A damaged header raises NumPy's ValueError (or EOFError) for the caller to name."""
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f, max_header_size=10_000)
    if dtype.hasobject:
        return shape, dtype  # a pickle, of no declared size: np.load refuses it (allow_pickle=False)
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize  # float: no overflow on forged sizes
    held = size - f.tell()
    if declared != held:
        raise error(f"{name} declares a {shape} {dtype} array ({declared:,} bytes) but holds {held:,} bytes: "
                    f"the file is truncated, corrupt or forged")
    return shape, dtype


def load_npy(path, error=CheckpointError):
    """The array in the .npy file ``path``, read only after check_npy_header has found its header true to
    the file's size; never a pickle. ``error``: the exception for a file that is not a readable .npy."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            check_npy_header(f, os.fstat(f.fileno()).st_size, f"{path}: its .npy header", error)
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
    except error:
        raise
    except FileNotFoundError as e:
        raise error(f"{path}: no such file") from e
    except (OSError, ValueError, EOFError) as e:  # a damaged header, a pickle, a directory, no permission
        raise error(f"{path}: cannot read it as a .npy array: {e}") from e


def check_writable(path, what):
    """Refuse, naming it as ``what`` ("--save PATH", "OUT.onnx PATH"), an output file that cannot be
    written: a directory, or one whose nearest existing parent is a file or not writable by us."""
    path = Path(path).resolve()
    if path.is_dir():
        raise ConfigError(f"{what}: is a directory; give a file name")
    parent = path.parent
    while not parent.exists():  # atomic_write creates the missing directories
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}: cannot write into {parent}" + ("" if parent.is_dir() else " (a file)"))
    return path


def check_declared_sizes(path, metadata, arrays):
    """Refuse a file whose architecture declares a parameter or buffer larger than the array stored
    for it (or one it does not store), from the config alone (Layer.declared_arrays), before any
    layer allocates its weights: a 1 KB file declaring Dense(10**6, 10**6) would ask for 4 TB.
    What is left (other shapes, bad settings) the model's own checks name, allocating no more than
    the file holds."""
    specs = metadata.get("model", {}).get("layers") if isinstance(metadata.get("model"), dict) else None
    for i, spec in enumerate(specs if isinstance(specs, list) else []):
        layer_type = LAYER_TYPES.get(spec.get("type")) if isinstance(spec, dict) else None
        try:
            declared = layer_type.declared_arrays(spec.get("config") or {}) if layer_type else {}
        except (KeyError, TypeError, ValueError, AttributeError):
            continue  # a malformed setting: the layer refuses it before allocating anything
        for kind_name, shape in declared.items():
            kind, name = kind_name.split("/")
            key = f"{kind}/{i}.{name}"
            stored = arrays.get(key)
            if stored is None:
                raise CheckpointError(f"{path}: array {key!r} is missing (layer {i}, {spec['type']}, "
                                      f"declares it with shape {shape})")
            if np.prod(shape, dtype=np.float64) > stored.size:  # float: no overflow on forged sizes
                raise CheckpointError(f"{path}: array {key!r} has shape {tuple(stored.shape)}, the model needs "
                                      f"{shape}")


def save_model(path, model, metadata=None):
    """Save ``model``'s architecture and parameters (and any extra JSON ``metadata``)."""
    meta = {"format": FORMAT, "version": VERSION, "model": model.config(), **(metadata or {})}
    save_arrays(path, meta, model.state_arrays())


def model_from_metadata(path, metadata, arrays):
    """The model a file's metadata describes, with its parameters and buffers from ``arrays``."""
    check_declared_sizes(path, metadata, arrays)
    config.fusion()  # a bad FASTNN_FUSION is the environment's fault, not the file's: not wrapped below
    try:
        model = Sequential.from_config(metadata["model"])
    except (ConfigError, ShapeError) as e:  # an unknown layer type, a bad setting, layers that do not fit
        raise CheckpointError(f"{path}: {e}") from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: malformed architecture in its metadata ({e!r})") from e
    load_model_arrays(path, model, arrays)
    return model


def load_model_arrays(path, model, arrays):
    """Set ``model``'s parameters and buffers from a file's ``arrays``: every one present, of its exact
    shape, finite, and nothing else under the model's prefixes."""
    model_arrays = {k: v for k, v in arrays.items() if k.startswith(MODEL_PREFIXES)}
    unexpected = set(model_arrays) - set(model.state_arrays())
    if unexpected:
        raise CheckpointError(f"{path}: arrays {sorted(unexpected)} do not belong to its architecture")
    not_finite = sorted(k for k, v in model_arrays.items() if v.dtype.kind == "f" and not np.isfinite(v).all())
    if not_finite:
        raise CheckpointError(f"{path}: arrays {not_finite} hold NaN or infinite values")
    try:
        model.load_state_arrays(model_arrays)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e


def load_model(path):
    """(model, metadata) from a model file, or the model in a training checkpoint."""
    metadata, arrays = load_arrays(path, (FORMAT, CHECKPOINT_FORMAT))
    return model_from_metadata(path, metadata, arrays), metadata
