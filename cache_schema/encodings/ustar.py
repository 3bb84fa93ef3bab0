"""Fast sequential reading of tar streams and .npy members, for the training hot path.

``tarfile`` in stream mode and ``np.lib.format.read_array`` parse every header in Python with
generic machinery (``ast.literal_eval`` per .npy header): at ~15 members per sample that was
most of the loader's time. These readers accept the same files (ustar, plus pax and GNU long
names written by other tools), verify every tar header checksum as ``tarfile`` does, and never
unpickle (object dtypes are refused).
"""

from __future__ import annotations

import ast
from functools import lru_cache
from typing import IO, Iterator

import numpy as np

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")
_SKIPPED = (b"1", b"2", b"3", b"4", b"5", b"6", b"g")  # links, devices, dirs, pax globals
_NPY_MAGIC = b"\x93NUMPY"


def _octal(field: bytes, what: str) -> int:
    text = field.rstrip(b"\0 ").strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ValueError(f"tar header has a bad {what} field {field!r}") from None


def _checksum_ok(header: bytes) -> bool:
    stored = _octal(header[148:156], "checksum")
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return stored == unsigned


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"tar stream ends inside a member ({len(data)} of {size} bytes)")
    return data


def iter_members(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file of a tar stream, in order."""
    long_name: str | None = None
    while True:
        header = stream.read(BLOCK)
        if not header or header == b"\0" * BLOCK:
            return
        if len(header) != BLOCK:
            raise EOFError("tar stream ends inside a header")
        if not _checksum_ok(header):
            raise ValueError("tar header fails its checksum (corrupt shard)")
        size = _octal(header[124:136], "size")
        kind = header[156:157]
        data = _read_exact(stream, size)
        pad = -size % BLOCK
        if pad:
            _read_exact(stream, pad)
        if kind == b"x":  # pax extended header: "<len> key=value\n" records
            long_name = _pax_path(data) or long_name
            continue
        if kind == b"L":  # GNU long name
            long_name = data.rstrip(b"\0").decode("utf-8")
            continue
        if kind in _SKIPPED:
            long_name = None
            continue
        if kind not in _REGULAR:
            raise ValueError(f"tar member type {kind!r} is not supported in a cache shard")
        if long_name is not None:
            name, long_name = long_name, None
        else:
            name = header[:100].rstrip(b"\0").decode("utf-8")
            prefix = header[345:500].rstrip(b"\0") if header[257:262] == b"ustar" else b""
            if prefix:
                name = f"{prefix.decode('utf-8')}/{name}"
        yield name, data


def _pax_path(data: bytes) -> str | None:
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8")
        pos += length
    return None


@lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    meta = ast.literal_eval(header.decode("latin1"))
    dtype = np.dtype(meta["descr"]) if not isinstance(meta["descr"], list) else np.dtype(
        [tuple(f) for f in meta["descr"]])
    if dtype.hasobject:
        raise ValueError("npy member holds Python objects; cache tensors never do (refusing to unpickle)")
    return dtype, tuple(meta["shape"]), bool(meta["fortran_order"])


def npy_from_bytes(data: bytes) -> np.ndarray:
    """A read-only array over the bytes of a .npy file (no copy); headers parsed once per form."""
    if data[:6] != _NPY_MAGIC:
        raise ValueError("member is not an .npy file (bad magic)")
    major = data[6]
    if major == 1:
        start, length = 10, int.from_bytes(data[8:10], "little")
    elif major in (2, 3):
        start, length = 12, int.from_bytes(data[8:12], "little")
    else:
        raise ValueError(f"unsupported .npy format version {major}")
    dtype, shape, fortran = _npy_header(bytes(data[start : start + length]))
    count = int(np.prod(shape)) if shape else 1
    array = np.frombuffer(data, dtype=dtype, count=count, offset=start + length)
    return array.reshape(shape, order="F" if fortran else "C")
