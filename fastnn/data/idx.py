"""The IDX file format of MNIST: a magic number, big-endian int32 dimensions, then raw data.

magic = 0x00 0x00 <type code> <number of dimensions>; this module reads and writes the
unsigned-byte type (0x08), the one MNIST uses. Files may be gzip-compressed.
"""
import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

UBYTE = 0x08


def decompress(raw: bytes, name="data") -> bytes:
    """The content of ``raw``: gunzipped if it starts with the gzip magic, else as it is."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: damaged compressed data
        raise DataError(f"{name}: the gzip stream is truncated or corrupt ({e}); delete it and download it again") from e


def parse_idx(content: bytes, name="data") -> np.ndarray:
    """An array from IDX bytes, with its shape checked against the header."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise DataError(f"{name}: not an IDX file (wrong magic number {content[:4].hex() or 'empty'}; "
                        f"expected 0000 08 followed by the number of dimensions)")
    type_code, ndim = content[2], content[3]
    if type_code != UBYTE:
        raise DataError(f"{name}: IDX type code 0x{type_code:02x}; fastnn reads unsigned-byte (0x08) files")
    header = 4 + 4 * ndim
    if ndim == 0 or len(content) < header:
        raise DataError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}i", content[4:header])
    if min(shape) < 0:
        raise DataError(f"{name}: corrupt IDX header: negative dimension in {shape}")
    expected = header + math.prod(shape)
    if len(content) != expected:
        raise DataError(f"{name}: truncated or padded: {len(content)} bytes, the header {shape} "
                        f"says {expected}; delete it and download it again")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a uint8 array of the shape its header gives."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e})") from e
    return parse_idx(decompress(raw, path.name), path.name)


def write_idx(path, array, compress=None):
    """Write a uint8 array as IDX; gzip it when ``compress`` is true (default: the name ends in .gz)."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"write_idx: expected a uint8 array, got {array.dtype}")
    content = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        content = gzip.compress(content)
    path.write_bytes(content)
