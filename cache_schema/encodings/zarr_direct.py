"""Reading the cache's own Zarr v3 groups object by object, with ranged reads of inner chunks.

The writer (``zarr_shard.encode_group``) produces two kinds of arrays: one chunk holding the
whole array (text, seeds, checksums: ``bytes`` or ``vlen-utf8``), and one ``sharding_indexed``
shard object whose inner chunks are ``bytes`` plus an optional blosc / zstd compressor (the
cache codec's). This reader parses exactly those, so a reader that wants some (sample, step)
chunks reads the shard index (one suffix range) and then only those chunks (one batched ranged
request, ``fs.cat_ranges``), and every byte it moves is counted. Anything else raises
``Unsupported`` and the caller falls back to zarr itself. Integrity is the per-tensor (and per
step) checksums' job; the shard index carries its own crc32c, checked here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import google_crc32c
import numcodecs
import numpy as np

from ..bounds import check_frame_size, parse_zarr_meta
from ..codecs.parallel import coded_map
from ..store import Store, with_retries
from .meter import ReadMeter
from .zarr_fast import read_full_array

_EMPTY = np.uint64(2**64 - 1)


class Unsupported(Exception):
    """An array this reader does not parse (the caller reads it with zarr)."""


class ChunkError(ValueError):
    """An inner chunk that does not decode; ``offset`` is the record (first axis) it holds."""

    def __init__(self, name: str, offset: int, exc: Exception):
        super().__init__(f"field {name}: inner chunk of record {offset} does not decode "
                         f"({type(exc).__name__}: {exc})")
        self.name, self.offset = name, offset


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(name)
    except TypeError:
        raise Unsupported(f"data type {name!r}") from None


def _decompressor(codecs: Sequence[dict]) -> Any:
    """The numcodecs decoder after a little-endian ``bytes`` codec, or None (raw)."""
    if not codecs or codecs[0].get("name") != "bytes" or \
            (codecs[0].get("configuration") or {}).get("endian", "little") != "little":
        raise Unsupported(f"codecs {codecs}")
    rest = codecs[1:]
    if not rest:
        return None
    if len(rest) == 1 and rest[0]["name"] == "blosc":
        return numcodecs.Blosc()
    if len(rest) == 1 and rest[0]["name"] == "zstd":
        return numcodecs.Zstd()
    raise Unsupported(f"codecs {codecs}")


def _decode_bounded(decoder: Any, payload: bytes, nbytes: int, where: str) -> Any:
    """``payload`` decoded into exactly ``nbytes`` (the layout's chunk size): the frame header's
    decoded size is checked first (cache_schema.bounds), so a forged frame allocates nothing."""
    if decoder is None:
        return payload
    check_frame_size(decoder.codec_id, payload, nbytes, where)
    return decoder.decode(payload, out=np.empty(nbytes, dtype=np.uint8))


class GroupReader:
    """One Zarr group of one cache shard; ``meter`` counts every byte read."""

    def __init__(self, store: Store, path: str, meter: ReadMeter | None = None,
                 layout: Any = None):
        self.store, self.path, self.meter = store, path, meter or ReadMeter()
        self.layout = layout  # bounds every array's metadata (cache_schema.bounds)
        self._meta: dict[str, dict] = {}

    def _read(self, key: str) -> bytes:
        data = self.store.read_bytes(f"{self.path}/{key}")
        self.meter.add(len(data))
        return data

    def attributes(self) -> dict:
        return self.meta("").get("attributes", {})

    def _load_meta(self, name: str) -> dict:
        key = f"{name}/zarr.json" if name else "zarr.json"
        self._meta[name] = parse_zarr_meta(self._read(key), name, self.layout,
                                           self.store.url_of(self.path))
        return self._meta[name]

    def meta(self, name: str) -> dict:
        return self._meta[name] if name in self._meta else self._load_meta(name)

    def has(self, name: str) -> bool:
        try:
            self.meta(name)
        except FileNotFoundError:
            return False
        return True

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.meta(name)["shape"])

    # -- whole arrays --------------------------------------------------------------------------
    def full(self, name: str) -> np.ndarray:
        meta = self.meta(name)
        shape = tuple(meta["shape"])
        codecs = meta.get("codecs") or []
        if meta["chunk_grid"]["configuration"]["chunk_shape"] != list(shape):
            raise Unsupported(f"{name}: more than one chunk")
        key = f"{name}/c/" + "/".join("0" * len(shape))
        if not self.store.exists(f"{self.path}/{key}"):
            # zarr leaves out a chunk whose values all equal the fill value (e.g. "" prompts)
            dtype = object if codecs and codecs[0]["name"] == "vlen-utf8" else _dtype(meta["data_type"])
            return np.full(shape, meta.get("fill_value") or (0 if dtype is not object else ""),
                           dtype=dtype)
        if codecs and codecs[0]["name"] == "vlen-utf8":
            if len(codecs) != 1:
                raise Unsupported(f"{name}: codecs {codecs}")
            values = numcodecs.VLenUTF8().decode(self._read(key))
            return np.asarray(values, dtype=object).reshape(shape)
        if codecs and codecs[0]["name"] == "sharding_indexed":
            conf = codecs[0]["configuration"]
            if len(conf.get("codecs") or []) == 1:  # raw inner chunks: one join, no per-chunk loop
                fast = read_full_array(
                    lambda key: json.dumps(meta).encode() if key == f"{name}/zarr.json"
                    else self._read(key), name)
                if fast is not None:
                    return fast
            grid = self._grid(meta)
            data = self._read(key)
            index = self._index(data[len(data) - self._index_size(grid, conf):], grid, conf)
            coords = list(np.ndindex(*grid))
            payloads = [data[int(o) : int(o) + int(n)] if o != _EMPTY else None for o, n in index]
            return self._assemble(name, meta, conf, coords, payloads, shape)
        decoder = _decompressor(codecs)
        data = self._read(key)
        dtype = _dtype(meta["data_type"])
        raw = _decode_bounded(decoder, data, int(np.prod(shape)) * dtype.itemsize,
                              f"{self.store.url_of(self.path)}: field {name}")
        return np.frombuffer(raw, dtype=_dtype(meta["data_type"]).newbyteorder("<")) \
            .reshape(shape).astype(_dtype(meta["data_type"]), copy=False)

    # -- inner chunks by range -----------------------------------------------------------------
    def chunks(self, name: str, coords: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        """The inner chunks at grid ``coords`` of a sharded array (chunk-shaped arrays)."""
        meta = self.meta(name)
        codecs = meta.get("codecs") or []
        if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
            raise Unsupported(f"{name}: not a sharded array")
        conf = codecs[0]["configuration"]
        grid = self._grid(meta)
        rel = f"{self.path}/{name}/c/" + "/".join("0" * len(grid))
        path = self.store.path(rel)
        fs = self.store.fs
        size = self._index_size(grid, conf)
        tail = with_retries(lambda: fs.cat_file(path, start=-size), f"read {self.store.url_of(rel)}")
        self.meter.add(len(tail))
        index = self._index(tail, grid, conf)
        flat = [int(np.ravel_multi_index(c, grid)) for c in coords]
        found = [(k, int(index[k][0]), int(index[k][1])) for k in flat if index[k][0] != _EMPTY]
        blobs = with_retries(lambda: fs.cat_ranges([path] * len(found), [o for _, o, _ in found],
                                                   [o + n for _, o, n in found]),
                             f"read {len(found)} ranges of {self.store.url_of(rel)}") if found else []
        for blob in blobs:
            if isinstance(blob, Exception):
                raise blob
        self.meter.add(sum(len(b) for b in blobs), requests=max(1, len(blobs)))
        by_flat = {k: b for (k, _, _), b in zip(found, blobs)}
        payloads = [by_flat.get(k) for k in flat]
        chunk = tuple(conf["chunk_shape"])
        out = []
        for coord, payload in zip(coords, payloads):
            try:
                out.append(self._decode_chunk(meta, conf, payload, chunk))
            except Exception as exc:
                raise ChunkError(name, int(coord[0]), exc) from exc
        return out

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _grid(meta: dict) -> tuple[int, ...]:
        conf = meta["codecs"][0]["configuration"]
        shape, chunk = meta["shape"], conf["chunk_shape"]
        if meta["chunk_grid"]["configuration"]["chunk_shape"] != shape or \
                any(c == 0 or s % c for s, c in zip(shape, chunk)):
            raise Unsupported("shard shape")
        if conf.get("index_location", "end") != "end":
            raise Unsupported("index at the start")
        return tuple(s // c for s, c in zip(shape, chunk))

    @staticmethod
    def _index_size(grid: tuple[int, ...], conf: dict) -> int:
        names = [c.get("name") for c in conf.get("index_codecs", [])]
        if names not in (["bytes"], ["bytes", "crc32c"]):
            raise Unsupported(f"index codecs {names}")
        return 16 * int(np.prod(grid)) + 4 * (len(names) == 2)

    @staticmethod
    def _index(tail: bytes, grid: tuple[int, ...], conf: dict) -> np.ndarray:
        count = int(np.prod(grid))
        body = tail[: 16 * count]
        if len(tail) == 16 * count + 4:
            want = np.frombuffer(tail[16 * count :], dtype="<u4")[0]
            if google_crc32c.value(body) != int(want):
                raise ValueError("shard index fails its crc32c (corrupt bytes)")
        elif len(tail) != 16 * count:
            raise ValueError("shard index truncated")
        return np.frombuffer(body, dtype="<u8").reshape(count, 2)

    def _decode_chunk(self, meta: dict, conf: dict, payload: bytes | None,
                      chunk: tuple[int, ...]) -> np.ndarray:
        dtype = _dtype(meta["data_type"])
        if payload is None:
            return np.full(chunk, meta.get("fill_value") or 0, dtype=dtype)
        decoder = _decompressor(conf.get("codecs") or [])
        items = int(np.prod(chunk))
        raw = _decode_bounded(decoder, payload, items * dtype.itemsize, "inner chunk")
        if len(raw) != items * dtype.itemsize:
            raise ValueError(f"inner chunk holds {len(raw)} bytes, expected {items * dtype.itemsize}")
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(chunk) \
            .astype(dtype, copy=False)

    def _assemble(self, name: str, meta: dict, conf: dict, coords, payloads, shape) -> np.ndarray:
        chunk = tuple(conf["chunk_shape"])
        out = np.empty(shape, dtype=_dtype(meta["data_type"]))

        def place(item) -> None:  # chunks decode on the codec threads, each into its own slice
            coord, payload = item
            where = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coord, chunk))
            try:
                out[where] = self._decode_chunk(meta, conf, payload, chunk)
            except Exception as exc:
                raise ChunkError(name, int(coord[0]), exc) from exc

        coded_map(place, list(zip(coords, payloads)), sum(len(p or b"") for p in payloads))
        return out
