"""Parsers that terminate and stay bounded (issue 17): every size and shape a shard's bytes
claim is checked against what the manifest's layout allows before anything is allocated.

The encodings call these (a few lines each): ``bounded_stream`` around a tar shard's stream
(a member larger than the layout's largest field is refused before its bytes are read),
``parse_npy_header`` for every ``.npy`` member (no ``ast`` on unbounded input, a dict of
exactly the keys numpy writes, a payload of exactly the size the header claims) and
``check_zarr_meta`` for every Zarr array's metadata (shape within the layout). Each refusal is
a ``ValueError`` (the encodings' read error) naming the member, which the reader reports as an
IntegrityError naming the shard.
"""

from __future__ import annotations

import ast
import json
import math
from typing import IO, Any

import numpy as np

from .fields import FIELD_BY_NAME, CacheLayout, FieldKind

# .npy headers numpy writes are ~120 bytes (padded to 64); a bound keeps ``ast`` shallow.
MAX_NPY_HEADER = 4096
# Text members (prompts): generous, but a fixed bound (a prompt is never megabytes).
MAX_TEXT_BYTES = 1 << 20
# Samples in one shard: far above any writer's samples_per_shard.
MAX_SHARD_SAMPLES = 1 << 20
# A sample id names its tar members ("<id>.<field>.npy" within ustar's 100-byte name field) and
# is a WebDataset key (cut at its first "."): content hashes (32 hex digits) fit easily.
MAX_SAMPLE_ID_BYTES = 64
_ID_FORBIDDEN = "./\\"
# The largest tar member ustar's 11 octal digits of size can say.
MAX_TAR_MEMBER_BYTES = 8**11 - 1
_NPY_KEYS = {"descr", "fortran_order", "shape"}


def _largest_field_bytes(layout: CacheLayout) -> int:
    sizes = layout.axis_sizes()
    sizes["L"] = layout.max_text_len
    largest = 0
    for spec in FIELD_BY_NAME.values():
        if spec.kind is FieldKind.TENSOR:
            itemsize = 8 if spec.dtype == "half" else layout.numpy_dtype(spec).itemsize  # a codec
            largest = max(largest, math.prod(sizes[a] for a in spec.axes) * itemsize)
    return largest


def max_member_bytes(layout: CacheLayout) -> int:
    """The largest tar member a shard of ``layout`` can hold: its largest tensor with its .npy
    header, or a text member (each with slack for other writers' headers)."""
    return max(_largest_field_bytes(layout) + MAX_NPY_HEADER, MAX_TEXT_BYTES)


def text_problem(name: str, text: str) -> str | None:
    """Why a text field's value is beyond what every reader accepts (the writer asks this
    before anything is written, a job before any teacher runs), or None."""
    if name == "sample_id":
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_SAMPLE_ID_BYTES:
            return f"{size} bytes, more than the {MAX_SAMPLE_ID_BYTES} a sample id may have"
        bad = next((c for c in text if c in _ID_FORBIDDEN or c.isspace() or not c.isprintable()),
                   None)
        if bad is not None:
            return (f"contains {bad!r}: a sample id names tar members and WebDataset keys (no "
                    "'.', '/', '\\', spaces or control characters)")
        return None
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        return f"{size} bytes of UTF-8, more than the {MAX_TEXT_BYTES} every reader accepts"
    return None


def layout_problem(layout: CacheLayout) -> str | None:
    """Why a shard of ``layout`` could hold a member no tar reader accepts, or None."""
    largest = _largest_field_bytes(layout) + MAX_NPY_HEADER
    if largest > MAX_TAR_MEMBER_BYTES:
        return (f"its largest field takes {largest} bytes, more than a tar member's size field "
                f"holds ({MAX_TAR_MEMBER_BYTES}); use encoding 'zarr' or a smaller latent")
    return None


class BoundedStream:
    """A read-only view of a tar stream that refuses a read larger than ``limit`` bytes (a
    member size the layout does not allow) and names the member whose header came before."""

    def __init__(self, stream: IO[bytes], limit: int, where: str):
        self._stream, self.limit, self.where = stream, limit, where
        self._last_header = b""

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self.limit:
            name = self._last_header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            raise ValueError(f"{self.where}: tar member {name!r} claims {size} bytes, more than "
                             f"the largest field this cache's layout allows ({self.limit} bytes)")
        data = self._stream.read(size)
        if size == 512:
            self._last_header = data
        return data

    def tell(self) -> int:
        return self._stream.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._stream.seek(offset, whence)

    def seekable(self) -> bool:
        return getattr(self._stream, "seekable", lambda: False)()


def bounded_stream(stream: IO[bytes], layout: CacheLayout, where: str) -> BoundedStream:
    return BoundedStream(stream, max_member_bytes(layout), where)


# numpy's own headers nest at most a structured dtype's fields of sub-arrays: dict, list, tuple,
# shape tuple. Counted over every bracket byte (inside strings too: a cheap upper bound).
MAX_NPY_NESTING = 16
_OPEN, _CLOSE = np.frombuffer(b"([{", np.uint8), np.frombuffer(b")]}", np.uint8)


def _bracket_depth(header: bytes) -> int:
    """The deepest bracket nesting of ``header`` (in one vectorised pass)."""
    raw = np.frombuffer(header, np.uint8)
    steps = np.isin(raw, _OPEN).astype(np.int32) - np.isin(raw, _CLOSE).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def parse_npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    """(dtype, shape, fortran_order) of a .npy header dict; ValueError for anything else:
    too long, not a literal, not a dict of exactly the numpy keys, an object dtype (never
    unpickled; plain records are fine), a shape that is not a tuple of non-negative ints."""
    if len(header) > MAX_NPY_HEADER:
        raise ValueError(f".npy header of {len(header)} bytes (at most {MAX_NPY_HEADER})")
    if _bracket_depth(header) > MAX_NPY_NESTING:  # before the parser: deep nesting takes it seconds
        raise ValueError(f".npy header nests brackets deeper than {MAX_NPY_NESTING} levels")
    try:
        meta = ast.literal_eval(header.decode("latin1"))
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError(f".npy header is not a Python literal ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or set(meta) != _NPY_KEYS:
        raise ValueError(f".npy header is not a dict of {sorted(_NPY_KEYS)}")
    descr, shape, fortran = meta["descr"], meta["shape"], meta["fortran_order"]
    structured = isinstance(descr, list) and all(
        isinstance(f, tuple) and len(f) in (2, 3) and isinstance(f[0], str) and
        isinstance(f[1], str) for f in descr)
    if not (isinstance(descr, str) or structured) or not isinstance(fortran, bool):
        raise ValueError(".npy header has a bad descr or a non-bool fortran_order")
    if not isinstance(shape, tuple) or len(shape) > 8 or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f".npy header shape {shape!r} is not a tuple of at most 8 sizes")
    try:
        dtype = np.dtype([tuple(f) for f in descr] if structured else descr)
    except (TypeError, ValueError, KeyError, RecursionError) as exc:
        raise ValueError(f".npy header descr {descr!r} is not a dtype ({exc})") from None
    if dtype.hasobject:
        raise ValueError("npy member holds Python objects; cache tensors never do (refusing to "
                         "unpickle)")
    return dtype, shape, fortran


def check_npy_payload(dtype: np.dtype, shape: tuple[int, ...], payload: int) -> int:
    """The element count of ``shape``; ValueError unless it fills exactly ``payload`` bytes."""
    count = math.prod(shape)
    if count * dtype.itemsize != payload:
        raise ValueError(f".npy header claims shape {shape} of {dtype} ({count * dtype.itemsize} "
                         f"bytes) but the member holds {payload} bytes")
    return count


_UNCOMPRESSED = {"bytes", "crc32c", "sharding_indexed", "vlen-utf8", "vlen-bytes", "transpose"}


def _codec_names(codecs: Any, depth: int = 0) -> list[str]:
    """Every codec name of a zarr.json codec list, sharding's inner and index codecs included."""
    if not isinstance(codecs, list) or depth > 4:
        return [] if codecs is None else ["<not a codec list>"]
    names = []
    for codec in codecs:
        conf = codec.get("configuration") if isinstance(codec, dict) else None
        names.append(codec.get("name") if isinstance(codec, dict) else "<not a codec>")
        if isinstance(conf, dict):
            for key in ("codecs", "index_codecs"):
                if key in conf:
                    names += _codec_names(conf[key], depth + 1)
    return [str(n) for n in names]


def check_zarr_meta(name: str, meta: Any, layout: CacheLayout, where: str) -> None:
    """A Zarr array's metadata (its ``zarr.json``) within the layout: a dict whose shape (and
    chunk shape) is a list of at most 8 sizes, at most ``MAX_SHARD_SAMPLES`` samples, and per
    sample no more elements than the layout's largest field (codecs may reshape a field, never
    grow it past that)."""
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: zarr metadata of {name!r} is not a JSON object")  # noqa: TRY004
    if meta.get("node_type") == "group":
        return
    per_sample = max(_largest_field_bytes(layout), MAX_TEXT_BYTES)  # bytes >= elements
    if layout.codec == "raw":  # stock zarr reads these unbounded: a raw cache compresses nothing
        coded = [c for c in _codec_names(meta.get("codecs")) if c not in _UNCOMPRESSED]
        if coded:
            raise ValueError(f"{where}: zarr array {name!r} uses codec {coded[0]!r}, but this "
                             "cache's layout stores raw values (no compressor)")
    shapes = [("shape", meta.get("shape"))]
    grid = meta.get("chunk_grid")
    if isinstance(grid, dict) and isinstance(grid.get("configuration"), dict):
        shapes.append(("chunk shape", grid["configuration"].get("chunk_shape")))
    for what, shape in shapes:
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"{where}: zarr array {name!r} has {what} {shape!r}, not a list of "
                             "1 to 8 sizes")
        if shape[0] > MAX_SHARD_SAMPLES or math.prod(shape[1:]) > per_sample:
            raise ValueError(f"{where}: zarr array {name!r} has {what} {shape}, beyond what this "
                             f"cache's layout allows (at most {MAX_SHARD_SAMPLES} samples of "
                             f"{per_sample} elements)")


MAX_JSON_BYTES = 1 << 20  # a Zarr array's zarr.json or a record's .meta.json is ~1 KB


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object from bounded bytes; ValueError (never RecursionError or TypeError) else."""
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(f"{what}: {len(data)} bytes of JSON (at most {MAX_JSON_BYTES})")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError, MemoryError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{what} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")  # noqa: TRY004 (bad bytes: the read error)
    return value


def parse_zarr_meta(data: bytes, name: str, layout: CacheLayout | None, where: str) -> dict:
    """``zarr.json`` of array (or group) ``name``: bounded JSON, then ``check_zarr_meta``."""
    meta = parse_json_object(data, f"{where}: zarr metadata of {name or 'the group'!r}")
    if layout is not None:
        check_zarr_meta(name, meta, layout, where)
    return meta


def parse_record_meta(data: bytes, member: str) -> dict[str, Any]:
    """A WebDataset record's ``.meta.json``: sample_id (str), seed (int), checksums (str: str)."""
    meta = parse_json_object(data, f"tar member {member!r}")
    sums = meta.get("checksums")
    if not isinstance(meta.get("sample_id"), str) or not isinstance(meta.get("seed"), int) or \
            isinstance(meta.get("seed"), bool) or not isinstance(sums, dict) or \
            not all(isinstance(k, str) and isinstance(v, str) for k, v in sums.items()):
        raise ValueError(f"tar member {member!r} is not a record's metadata (sample_id, seed, "
                         "checksums)")
    return meta


# Frame headers of the compressed chunks a codec stores (``Codec.compressor``): the decoded size
# a frame claims is checked against what the layout's chunk holds before any output buffer is
# allocated, and decoding then writes into a buffer of exactly that size (a frame that decodes
# to more is refused by the decompressor, not grown into).
BLOSC_HEADER = 16
ZSTD_MAGIC = 0xFD2FB528
_ZSTD_FCS_BYTES = (0, 2, 4, 8)


def frame_decoded_size(compressor: str, payload: bytes, where: str) -> tuple[str, int | None]:
    """(header field, decoded size) a ``blosc`` or ``zstd`` frame's header claims (size None: a
    zstd frame without its optional content size); ValueError for a header that is not one."""
    data = bytes(payload[:BLOSC_HEADER])
    if compressor == "blosc":
        if len(data) < BLOSC_HEADER:
            raise ValueError(f"{where}: blosc frame of {len(payload)} bytes, shorter than its "
                             f"{BLOSC_HEADER}-byte header")
        nbytes, blocksize, cbytes = (int.from_bytes(data[i : i + 4], "little") for i in (4, 8, 12))
        if cbytes != len(payload):
            raise ValueError(f"{where}: blosc frame header's cbytes field claims {cbytes} bytes "
                             f"but the chunk holds {len(payload)}")
        if blocksize > max(nbytes, 1):
            raise ValueError(f"{where}: blosc frame header's blocksize field ({blocksize}) is "
                             f"larger than its nbytes field ({nbytes})")
        return "nbytes", nbytes
    if compressor == "zstd":
        if len(data) < 5 or int.from_bytes(data[:4], "little") != ZSTD_MAGIC:
            raise ValueError(f"{where}: chunk does not start with a zstd frame header")
        descriptor = data[4]
        single_segment = bool(descriptor & 0x20)
        size_bytes = _ZSTD_FCS_BYTES[descriptor >> 6] or (1 if single_segment else 0)
        if not size_bytes:
            return "Frame_Content_Size", None
        start = 5 + (not single_segment) + (0, 1, 2, 4)[descriptor & 3]
        if len(data) < start + size_bytes:
            raise ValueError(f"{where}: zstd frame header truncated")
        size = int.from_bytes(data[start : start + size_bytes], "little")
        return "Frame_Content_Size", size + 256 * (size_bytes == 2)
    raise ValueError(f"{where}: no frame header parser for compressor {compressor!r}")


def check_frame_size(compressor: str, payload: bytes, expected: int, where: str) -> None:
    """ValueError naming the header field unless the frame claims exactly ``expected`` decoded
    bytes (the layout's chunk size); a zstd frame that does not say is decoded into a buffer of
    ``expected`` bytes and refused by the decompressor if it holds more."""
    field, size = frame_decoded_size(compressor, payload, where)
    if size is not None and size != expected:
        raise ValueError(f"{where}: {compressor} frame header's {field} field claims {size} "
                         f"decoded bytes, the layout's chunk holds {expected} (refused before "
                         "decoding)")


__all__ = ["MAX_NPY_HEADER", "MAX_SAMPLE_ID_BYTES", "MAX_SHARD_SAMPLES", "MAX_TEXT_BYTES",
           "BoundedStream", "bounded_stream", "check_frame_size", "check_npy_payload",
           "check_zarr_meta", "frame_decoded_size", "layout_problem", "max_member_bytes",
           "parse_json_object", "parse_npy_header", "parse_record_meta", "parse_zarr_meta",
           "text_problem"]
