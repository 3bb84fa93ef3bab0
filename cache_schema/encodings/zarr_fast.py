"""Whole-array reads of the cache's sharded Zarr arrays without per-inner-chunk overhead.

A cache array is one shard object of uncompressed inner chunks, one per (sample, step). Zarr
decodes the thousands of inner chunks of a full read one by one in Python (~100 samples/s on
the demo layout); this reader parses the shard index (Zarr v3 ``sharding_indexed``) and places
the raw chunk bytes with numpy. It only takes arrays it fully understands (one shard, raw
little-endian inner chunks that tile the shape) and returns None otherwise, so the caller falls
back to zarr itself. Integrity is the per-tensor checksums' job, as on the zarr path.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

_EMPTY = np.uint64(2**64 - 1)


def _raw_layout(meta: dict) -> tuple[np.dtype, list[int], list[int], str, int] | None:
    codecs = meta.get("codecs") or []
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
        return None
    conf = codecs[0]["configuration"]
    inner = conf.get("codecs") or []
    if len(inner) != 1 or inner[0].get("name") != "bytes":
        return None
    index_codecs = [c.get("name") for c in conf.get("index_codecs", [])]
    if index_codecs not in (["bytes"], ["bytes", "crc32c"]):
        return None
    shape, chunk = meta["shape"], conf["chunk_shape"]
    if meta["chunk_grid"]["configuration"]["chunk_shape"] != shape or len(chunk) != len(shape) \
            or any(c == 0 or s % c for s, c in zip(shape, chunk)):
        return None
    try:
        dtype = np.dtype(meta["data_type"]).newbyteorder("<")
    except TypeError:
        return None
    if dtype.kind not in "biuf":
        return None
    return dtype, shape, chunk, conf.get("index_location", "end"), 4 * (len(index_codecs) == 2)


def read_full_array(read_object: Callable[[str], bytes], name: str) -> np.ndarray | None:
    """The whole array ``name`` of a shard group, or None when this reader does not apply."""
    meta = json.loads(read_object(f"{name}/zarr.json"))
    layout = _raw_layout(meta)
    if layout is None:
        return None
    dtype, shape, chunk, where, crc_bytes = layout
    grid = [s // c for s, c in zip(shape, chunk)]
    count, chunk_items = int(np.prod(grid)), int(np.prod(chunk))
    try:
        data = read_object(f"{name}/c/" + "/".join("0" * len(shape)))
    except FileNotFoundError:  # zarr leaves out a shard whose chunks all equal the fill value
        return np.full(shape, meta.get("fill_value") or 0, dtype=dtype.newbyteorder("="))
    index_bytes = 16 * count
    start = len(data) - index_bytes - crc_bytes if where == "end" else 0
    index = np.frombuffer(data, dtype="<u8", count=2 * count, offset=start).reshape(count, 2)
    chunk_bytes = chunk_items * dtype.itemsize
    filled = index[:, 0] != _EMPTY
    if np.any(index[filled, 1] != chunk_bytes):
        return None
    offsets = np.arange(count, dtype=np.uint64) * chunk_bytes + (index_bytes + crc_bytes) * (where != "end")
    if filled.all() and np.array_equal(index[:, 0], offsets):
        blocks = np.frombuffer(data, dtype=dtype, count=count * chunk_items, offset=int(offsets[0]))
        blocks = blocks.reshape(count, chunk_items)
    else:
        blocks = np.full((count, chunk_items), meta.get("fill_value") or 0, dtype=dtype)
        for k in np.flatnonzero(filled):
            blocks[k] = np.frombuffer(data, dtype=dtype, count=chunk_items, offset=int(index[k, 0]))
    # (grid..., chunk...) -> interleave (g0, c0, g1, c1, ...) -> shape
    tiled = blocks.reshape(*grid, *chunk)
    order = [axis for pair in zip(range(len(grid)), range(len(grid), 2 * len(grid))) for axis in pair]
    return tiled.transpose(order).reshape(shape).astype(dtype.newbyteorder("="), copy=False)
