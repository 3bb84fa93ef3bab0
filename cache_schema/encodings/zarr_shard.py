"""Zarr v3 encoding: one group per cache shard, one array per field, first axis = sample.

Step fields are stored with the sharding codec: one shard object per array holding inner
chunks of one (sample, step) each, so a reader that wants 4 of 40 steps issues ranged reads
for those inner chunks only. Text embeddings are padded to ``max_text_len`` with a length
array beside them. Latents are noise-like, so no compressor (it would cost CPU for ~0 gain).
The group is built in memory and uploaded object by object, hashing as it goes: the group hash
is sha256 over the sorted "path sha256" lines of its objects (``base.group_hash``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import google_crc32c  # zarr's own crc32c implementation (a zarr dependency)
import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore, MemoryStore

from ..checksum import record_checksums
from ..fields import CHECKSUMS_KEY, FIELD_BY_NAME, FIELDS, CacheLayout, FieldKind
from ..store import Store
from .base import Encoding, group_hash
from .common import step_positions
from .zarr_fast import read_full_array

TEXT_FIELDS = ("sample_id", "prompt", "negative_prompt")
LEN_SUFFIX = "_len"


def encode_group(records: Sequence[dict[str, Any]], layout: CacheLayout) -> dict[str, bytes]:
    """{object key: bytes} of a Zarr v3 group holding ``records``; deterministic."""
    objects: dict[str, Any] = {}
    raw: dict[str, bytes] = {}
    group = zarr.open_group(store=MemoryStore(objects), mode="w", zarr_format=3)
    n = len(records)
    for name in TEXT_FIELDS:
        arr = group.create_array(name, shape=(n,), chunks=(n,), dtype=str, compressors=None)
        arr[:] = np.array([r[name] for r in records], dtype=object)
    seeds = group.create_array("seed", shape=(n,), chunks=(n,), dtype="int64", compressors=None)
    seeds[:] = np.array([int(r["seed"]) for r in records], dtype=np.int64)
    sums = group.create_array(CHECKSUMS_KEY, shape=(n,), chunks=(n,), dtype=str, compressors=None)
    sums[:] = np.array([json.dumps(r.get(CHECKSUMS_KEY) or record_checksums(r), sort_keys=True)
                        for r in records], dtype=object)
    for spec in FIELDS:
        if spec.kind is not FieldKind.TENSOR or spec.name not in records[0]:
            continue
        dtype = layout.numpy_dtype(spec)
        if spec.axes and spec.axes[0] == "L":  # variable token count: pad, keep lengths
            width = layout.text_dim
            data = np.zeros((n, layout.max_text_len, width), dtype=dtype)
            lengths = np.zeros((n,), dtype=np.int32)
            for i, r in enumerate(records):
                lengths[i] = r[spec.name].shape[0]
                data[i, : lengths[i]] = r[spec.name]
            group.create_array(spec.name, shape=data.shape, chunks=(1, *data.shape[1:]),
                               shards=data.shape, dtype=dtype, compressors=None, fill_value=0)
            raw[f"{spec.name}/c/0/0/0"] = sharded_raw_object(list(data), (1, *data.shape[1:]))
            lens = group.create_array(spec.name + LEN_SUFFIX, shape=(n,), chunks=(n,),
                                      dtype="int32", compressors=None)
            lens[:] = lengths
            continue
        values = [np.ascontiguousarray(r[spec.name], dtype=dtype) for r in records]
        shape = (n, *values[0].shape)
        if spec.per_step and len(shape) > 2:
            chunks = (1, 1, *shape[2:])  # one (sample, step) per inner chunk
        else:
            chunks = (1, *shape[1:])
        # zarr writes the metadata; the shard object is built here (zarr's own encoder went
        # through thousands of inner chunks one by one: most of a zarr shard's write time).
        group.create_array(spec.name, shape=shape, chunks=chunks, shards=shape, dtype=dtype,
                           compressors=None, fill_value=0)
        raw[f"{spec.name}/c/" + "/".join("0" * len(shape))] = sharded_raw_object(values, chunks)
    out = {key: buf.to_bytes() for key, buf in objects.items()}
    out.update(raw)
    return dict(sorted(out.items()))


def sharded_raw_object(values: Sequence[np.ndarray], chunks: Sequence[int]) -> bytes:
    """The one shard object of a ``sharding_indexed`` array (raw ``bytes`` inner codec, index at
    the end with ``bytes`` + ``crc32c`` index codecs, zarr's defaults) whose first axis stacks
    ``values`` and whose inner chunks cover all trailing axes past the chunked ones: in C order
    the concatenated records are the inner chunks in grid order, so the data is one join."""
    count = int(np.prod([len(values), *values[0].shape])) // int(np.prod(chunks))
    chunk_bytes = int(np.prod(chunks)) * values[0].dtype.itemsize
    index = np.empty((count, 2), dtype="<u8")
    index[:, 0] = np.arange(count, dtype=np.uint64) * np.uint64(chunk_bytes)
    index[:, 1] = chunk_bytes
    index_bytes = index.tobytes()
    crc = np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
    if sys.byteorder == "big":  # the metadata says little-endian
        values = [v.byteswap() for v in values]
    return b"".join([*(v.reshape(-1).view(np.uint8) for v in values), index_bytes, crc])


def open_group(store: Store, path: str):
    if store.is_local:
        zstore = LocalStore(store.path(path), read_only=True)
    else:  # from_url builds an asynchronous filesystem instance, as zarr requires
        zstore = FsspecStore.from_url(store.url_of(path), storage_options=store.storage_options,
                                      read_only=True)
    return zarr.open_group(store=zstore, mode="r", zarr_format=3)


def iter_group(group, layout: CacheLayout, fields: Sequence[str],
               steps: Sequence[int] | None = None,
               read_object: Callable[[str], bytes] | None = None) -> Iterator[dict[str, Any]]:
    """Records of one shard group; step fields fetch only the requested steps.

    ``read_object(key)`` (bytes of an object of the group) enables the fast whole-array path.
    """
    positions = step_positions(layout, steps)
    columns: dict[str, Any] = {}
    n = group["sample_id"].shape[0]
    for name in fields:
        if name not in group:
            if FIELD_BY_NAME[name].optional:
                continue
            raise KeyError(f"field {name!r} missing from zarr shard")
        arr = group[name]
        spec = FIELD_BY_NAME[name]
        if spec.per_step and positions is not None:
            columns[name] = arr.oindex[:, positions]
        else:
            fast = read_full_array(read_object, name) if read_object and spec.kind is FieldKind.TENSOR else None
            columns[name] = fast if fast is not None else arr[:]
        if spec.axes and spec.axes[0] == "L":
            columns[name + LEN_SUFFIX] = group[name + LEN_SUFFIX][:]
    checks = [json.loads(s) for s in group[CHECKSUMS_KEY][:]]
    for i in range(n):
        record: dict[str, Any] = {CHECKSUMS_KEY: checks[i]}
        for name in fields:
            if name not in columns:
                continue
            value = columns[name][i]
            spec = FIELD_BY_NAME[name]
            if spec.kind is FieldKind.TEXT:
                value = str(value)
            elif spec.kind is FieldKind.INT:
                value = int(value)
            elif spec.axes and spec.axes[0] == "L":
                value = np.ascontiguousarray(value[: columns[name + LEN_SUFFIX][i]])
            else:
                value = np.ascontiguousarray(value)
            record[name] = value
        yield record


class Zarr(Encoding):
    """One Zarr v3 group per shard, one inner chunk per (sample, step) (DESIGN 3.4): a reader
    that wants a few steps fetches only those."""

    name = "zarr"
    suffix = ".zarr"

    def encode(self, records: Sequence[dict[str, Any]], layout: CacheLayout) -> dict[str, bytes]:
        return encode_group(records, layout)

    def iter_records(self, store: Store, path: str, layout: CacheLayout, fields: Sequence[str],
                     steps: Sequence[int] | None = None) -> Iterator[dict[str, Any]]:
        yield from iter_group(open_group(store, path), layout, fields, steps,
                              lambda key: store.read_bytes(f"{path}/{key}"))

    def objects(self, store: Store, path: str) -> dict[str, int]:
        return {rel.removeprefix(path + "/"): size
                for rel, size in store.walk_files(path).items()}

    def shard_hash(self, object_hashes: dict[str, str]) -> str:
        return group_hash(object_hashes)
