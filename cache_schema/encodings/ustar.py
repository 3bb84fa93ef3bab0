"""Fast sequential reading of tar streams and .npy members, for the training hot path.

``tarfile`` in stream mode and ``np.lib.format.read_array`` parse every header in Python with
generic machinery (``ast.literal_eval`` per .npy header): at ~15 members per sample that was
most of the loader's time (measured in issue 13: 6.6x tarfile's samples/s on the demo shape, 4.4x
on the Wan 2.2 shape). These readers accept the same files (ustar, plus pax and GNU long names
written by other tools), verify every tar header checksum as ``tarfile`` does, and never
unpickle (object dtypes are refused).

A valid tar feature this reader does not implement (base-256 numbers, pax ``size`` or
``hdrcharset`` records, sparse and other GNU member types) raises ``Unsupported`` inside; the
member stream then continues with stock ``tarfile`` from the start of the archive, skipping the
members already delivered (the stream must be seekable: files and fsspec files are). Corrupt
bytes (a failed header checksum, a truncated member) are errors, never a fallback.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import lru_cache
from typing import IO

import numpy as np

from ..bounds import check_npy_payload, parse_npy_header
from .tar_stock import tarfile_members

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")
_SKIPPED = (b"1", b"2", b"3", b"4", b"5", b"6", b"g")  # links, devices, dirs, pax globals
_NPY_MAGIC = b"\x93NUMPY"
# pax records that change how a member is read; ``path`` is handled, the rest go to tarfile.
_PAX_UNSUPPORTED = (b"size", b"hdrcharset", b"GNU.sparse")


class Unsupported(ValueError):
    """A valid tar feature this reader leaves to stock ``tarfile`` (see the module docstring)."""


def _octal(field: bytes, what: str) -> int:
    text = field.rstrip(b"\0 ").strip()
    if not text:
        return 0
    try:
        value = int(text, 8)
    except ValueError:
        raise ValueError(f"tar header has a bad {what} field {field!r}") from None
    if value < 0:
        raise ValueError(f"tar header has a negative {what} field {field!r}")
    return value


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
    """(name, data) of each regular file of a tar stream, in order; what the fast reader does
    not implement is read by stock ``tarfile`` instead (the module docstring says when)."""
    try:
        start = stream.tell()
    except (OSError, AttributeError, io.UnsupportedOperation):
        start = None
    delivered = 0
    try:
        for member in fast_members(stream):
            yield member
            delivered += 1
    except Unsupported as why:
        if start is None or not getattr(stream, "seekable", lambda: False)():
            raise Unsupported(f"tar stream uses a feature the fast reader leaves to tarfile "
                              f"({why}), and it cannot be re-read from its start: open the shard "
                              "as a seekable file") from None
        stream.seek(start)
        for index, member in enumerate(tarfile_members(stream)):
            if index >= delivered:
                yield member


def fast_members(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """The fast reader alone: raises ``Unsupported`` where ``iter_members`` falls back."""
    long_name: str | None = None
    while True:
        header = stream.read(BLOCK)
        if not header or header == b"\0" * BLOCK:
            return
        if len(header) != BLOCK:
            raise EOFError("tar stream ends inside a header")
        if not _checksum_ok(header):
            raise ValueError("tar header fails its checksum (corrupt shard)")
        if header[124:125] in (b"\x80", b"\xff"):  # GNU base-256: members over 8 GiB, say
            raise Unsupported("base-256 size field")
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
            raise Unsupported(f"tar member type {kind!r}")
        if long_name is not None:
            name, long_name = long_name, None
        else:
            name = header[:100].rstrip(b"\0").decode("utf-8")
            prefix = header[345:500].rstrip(b"\0") if header[257:262] == b"ustar" else b""
            if prefix:
                name = f"{prefix.decode('utf-8')}/{name}"
        yield name, data


def _pax_path(data: bytes) -> str | None:
    path = None
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        if length < space - pos + 2 or pos + length > len(data):  # else: an endless loop
            raise ValueError(f"tar pax record at byte {pos} has a bad length {length}")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        if key.startswith(_PAX_UNSUPPORTED):
            raise Unsupported(f"pax record {key.decode('utf-8', 'replace')!r}")
        if key == b"path":
            path = value.decode("utf-8")
        pos += length
    return path


@lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    return parse_npy_header(header)  # bounded, never an ast traceback (issue 17)


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
    count = check_npy_payload(dtype, shape, len(data) - start - length)
    array = np.frombuffer(data, dtype=dtype, count=count, offset=start + length)
    return array.reshape(shape, order="F" if fortran else "C")


# -- writing ------------------------------------------------------------------------------------
RECORD = 20 * BLOCK  # tarfile pads archives to whole records of 20 blocks


def _field(text: str, length: int) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > length:
        raise ValueError(f"tar member name {text!r} is longer than {length} bytes")
    return raw + b"\0" * (length - len(raw))


def _number(value: int, digits: int) -> bytes:
    return b"%0*o\0" % (digits - 1, value)


def member_header(name: str, size: int, *, owner: str = "s2dit", mode: int = 0o644) -> bytes:
    """The 512-byte ustar header ``tarfile`` writes for a regular file with mtime 0, uid/gid 0
    (byte for byte, so shards stay identical to earlier ones)."""
    header = b"".join([_field(name, 100), _number(mode, 8), _number(0, 8), _number(0, 8),
                       _number(size, 12), _number(0, 12), b" " * 8, b"0", b"\0" * 100,
                       b"ustar\x0000", _field(owner, 32), _field(owner, 32),
                       b"\0" * 16, b"\0" * 155])  # no device numbers for regular files
    header += b"\0" * (BLOCK - len(header))
    checksum = b"%06o\0" % sum(header)
    return header[:148] + checksum + header[155:]


def npy_header(array: np.ndarray) -> bytes:
    """The .npy header ``np.save`` writes for ``array`` (format 1.0)."""
    return _npy_header_for(array.dtype.str, array.shape)


@lru_cache(maxsize=256)
def _npy_header_for(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def encode_tar(members: list[tuple[str, list[bytes | memoryview | np.ndarray]]]) -> bytes:
    """A ustar archive of (name, data parts) members, joined in one copy; the same bytes as
    ``tarfile`` in USTAR format with fixed mtime, owner and mode."""
    parts: list[bytes | memoryview | np.ndarray] = []
    offset = 0
    for name, data in members:
        size = sum(memoryview(p).nbytes for p in data)  # bytes or uint8 arrays
        parts.append(member_header(name, size))
        parts.extend(data)
        pad = -size % BLOCK
        if pad:
            parts.append(b"\0" * pad)
        offset += BLOCK + size + pad
    offset += 2 * BLOCK
    parts.append(b"\0" * (2 * BLOCK + (-offset % RECORD)))
    return b"".join(parts)
