"""The IDX file format of MNIST: a magic number, big-endian int32 dimensions, then raw data.

magic = 0x00 0x00 <type code> <number of dimensions>; this module reads and writes the
unsigned-byte type (0x08), the one MNIST uses. Files may be gzip-compressed.

The header's sizes are checked against what the file holds before anything of that size is
allocated (as fastnn/checkpoint.py checks .npy headers): a plain file must hold exactly what its
header declares, and a gzipped one is inflated no further than that (and not at all when deflate
could not pack the declared bytes into the file's size), so a small gzip bomb inflates nothing big.
"""
import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
MAX_DEFLATE_RATIO = 1032  # deflate's limit: at best a 258-byte match per 2 bits of code


def decompress(raw: bytes, name="data", limit=None) -> bytes:
    """The content of ``raw``: gunzipped (every member, as gzip.decompress) if it starts with the gzip
    magic, else as it is. With ``limit``, no more than limit + 1 bytes are inflated or returned, so that
    a content longer than the caller expects is seen to be longer without being inflated whole."""
    if raw[:2] != GZIP_MAGIC:
        return raw if limit is None else raw[:limit + 1]
    parts, total, data = [], 0, raw
    try:
        while data[:2] == GZIP_MAGIC:  # one gzip member after another
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header, CRC and length checked
            while not inflater.eof:
                if limit is not None and total > limit:
                    return b"".join(parts)
                room = 0 if limit is None else limit + 1 - total  # max_length 0: no limit
                part = inflater.decompress(data, room)
                if not part and len(inflater.unconsumed_tail) == len(data):
                    raise EOFError("the compressed stream ended before its end-of-stream marker")
                data = inflater.unconsumed_tail
                parts.append(part)
                total += len(part)
            data = inflater.unused_data.lstrip(b"\x00")  # gzip files may be padded with zeros
        if data:
            raise OSError(f"{len(data):,} bytes after the gzip stream that are not a gzip member")
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: damaged compressed data
        raise DataError(f"{name}: the gzip stream is truncated or corrupt ({e}); delete it and download it "
                        f"again") from e
    return b"".join(parts)


def idx_header(content: bytes, name="data"):
    """(shape, header bytes) from the start of IDX bytes, the magic number and dimensions checked."""
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
    return shape, header


def parse_idx(content: bytes, name="data") -> np.ndarray:
    """An array from IDX bytes, with its shape checked against the header (a view: no copy)."""
    shape, header = idx_header(content, name)
    expected = header + math.prod(shape)
    if len(content) != expected:
        raise DataError(f"{name}: truncated or padded: {len(content)} bytes, the header {shape} "
                        f"says {expected}; delete it and download it again")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def idx_content(raw: bytes, name="data") -> bytes:
    """The IDX bytes of a file's ``raw`` bytes, gunzipped if gzipped, inflating no more than the header
    declares (plus one byte, to see a padded file); a header that declares more than a gzip file of
    this size can hold is refused before inflating anything more."""
    if raw[:2] != GZIP_MAGIC:
        return raw  # parse_idx compares the header with the bytes there are
    shape, header = idx_header(decompress(raw, name, limit=4 + 4 * 255), name)
    declared = header + math.prod(shape)
    if declared > MAX_DEFLATE_RATIO * len(raw):
        raise DataError(f"{name}: its IDX header declares {shape} ({declared:,} bytes), more than a gzip file of "
                        f"{len(raw):,} bytes can hold (deflate packs at most {MAX_DEFLATE_RATIO}:1): the file is "
                        f"truncated, corrupt or forged")
    return decompress(raw, name, limit=declared)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a uint8 array of the shape its header gives."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e})") from e
    return parse_idx(idx_content(raw, path.name), path.name)


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
