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
from zarr.codecs import BloscCodec
from zarr.storage import FsspecStore, LocalStore, MemoryStore

from ..checksum import record_checksums
from ..codecs import Codec, get_codec
from ..codecs.parallel import coded_map, threads
from ..errors import IntegrityError, StepNotStored
from ..fields import CHECKSUMS_KEY, FIELD_BY_NAME, FIELDS, CacheLayout, FieldKind
from ..store import Store
from .base import Encoding, Selection, group_hash
from .common import step_positions
from .meter import ReadMeter
from .zarr_direct import ChunkError, GroupReader, Unsupported
from .zarr_fast import read_full_array

TEXT_FIELDS = ("sample_id", "prompt", "negative_prompt")
LEN_SUFFIX = "_len"
CODEC_ATTR = "s2dit_codec"  # group attribute naming a non-raw codec (stock readers see it)


def _zarr_compressor(codec: Codec, itemsize: int):
    """The zarr v3 codec equal to ``codec.compressor()`` (stock zarr decodes the chunks)."""
    comp = codec.compressor()
    if comp is None:
        return None
    conf = comp.get_config()
    if conf["id"] != "blosc":
        raise ValueError(f"codec {codec.name}: no zarr form of compressor {conf}")
    shuffle = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}[conf["shuffle"]]
    return BloscCodec(cname=conf["cname"], clevel=conf["clevel"], shuffle=shuffle,
                      typesize=itemsize, blocksize=conf.get("blocksize", 0))


def _add_array(group, raw: dict[str, bytes], name: str, values: Sequence[np.ndarray],
               chunks: tuple[int, ...], codec: Codec) -> None:
    """One sharded array whose first axis stacks ``values``; the shard object is built here
    (zarr's own encoder went through thousands of inner chunks one by one: most of a zarr
    shard's write time)."""
    shape = (len(values), *values[0].shape)
    dtype = values[0].dtype
    compressor = _zarr_compressor(codec, dtype.itemsize)
    group.create_array(name, shape=shape, chunks=chunks, shards=shape, dtype=dtype,
                       compressors=compressor, fill_value=0)
    key = f"{name}/c/" + "/".join("0" * len(shape))
    if compressor is None:
        raw[key] = sharded_raw_object(values, chunks)
    else:
        raw[key] = sharded_object(compressed_chunks(values, chunks, codec.compressor()))


def encode_group(records: Sequence[dict[str, Any]], layout: CacheLayout) -> dict[str, bytes]:
    """{object key: bytes} of a Zarr v3 group holding ``records``; deterministic."""
    codec = get_codec(layout.codec)
    objects: dict[str, Any] = {}
    raw: dict[str, bytes] = {}
    group = zarr.open_group(store=MemoryStore(objects), mode="w", zarr_format=3)
    if codec.name != "raw":
        group.attrs[CODEC_ATTR] = codec.name
    n = len(records)
    for name in TEXT_FIELDS:
        arr = group.create_array(name, shape=(n,), chunks=(n,), dtype=str, compressors=None)
        arr[:] = np.array([r[name] for r in records], dtype=object)
    seeds = group.create_array("seed", shape=(n,), chunks=(n,), dtype="int64", compressors=None)
    seeds[:] = np.array([int(r["seed"]) for r in records], dtype=np.int64)
    sums = group.create_array(CHECKSUMS_KEY, shape=(n,), chunks=(n,), dtype=str, compressors=None)
    sums[:] = np.array([json.dumps(r.get(CHECKSUMS_KEY) or record_checksums(r), sort_keys=True)
                        for r in records], dtype=object)
    coded = coded_map(lambda r: codec.transform(r, layout), records,
                      _step_bytes(records)) if codec.transformed else [{}] * n
    for name, (dtype, shape) in codec.extra.items():
        values = [np.ascontiguousarray(c[name], dtype=dtype) for c in coded]
        _add_array(group, raw, name, values, (1, *shape), get_codec("raw"))
    for spec in FIELDS:
        if spec.kind is not FieldKind.TENSOR or spec.name not in records[0]:
            continue
        dtype = layout.numpy_dtype(spec)
        if spec.axes and spec.axes[0] == "L":  # variable token count: pad, keep lengths
            data = np.zeros((n, layout.max_text_len, layout.text_dim), dtype=dtype)
            lengths = np.zeros((n,), dtype=np.int32)
            for i, r in enumerate(records):
                lengths[i] = r[spec.name].shape[0]
                data[i, : lengths[i]] = r[spec.name]
            _add_array(group, raw, spec.name, list(data), (1, *data.shape[1:]), codec)
            lens = group.create_array(spec.name + LEN_SUFFIX, shape=(n,), chunks=(n,),
                                      dtype="int32", compressors=None)
            lens[:] = lengths
            continue
        if spec.name in codec.transformed:
            values = [np.ascontiguousarray(c[spec.name]) for c in coded]
        else:
            values = [np.ascontiguousarray(r[spec.name], dtype=dtype) for r in records]
        if spec.per_step and values[0].ndim > 1 and codec.step_chunks:
            chunks = (1, 1, *values[0].shape[1:])  # one (sample, step) per inner chunk
        else:
            chunks = (1, *values[0].shape)
        _add_array(group, raw, spec.name, values, chunks, codec)
    out = {key: buf.to_bytes() for key, buf in objects.items()}
    out.update(raw)
    return dict(sorted(out.items()))


def _step_bytes(records: Sequence[dict[str, Any]]) -> int:
    return sum(r[name].nbytes for r in records for name in ("states", "v_cond", "v_uncond")
               if name in r)


def compressed_chunks(values: Sequence[np.ndarray], chunks: Sequence[int], compressor
                      ) -> list[bytes]:
    """Inner chunks in grid order (C order over the stacked ``values``), each compressed.
    Chunks cover whole trailing axes past the chunked ones, as the writer lays them out."""
    per_value = int(np.prod(values[0].shape)) // int(np.prod(chunks[1:]))
    rows = []
    for value in values:
        flat = value.reshape(per_value, -1)
        if flat.dtype.kind not in "biuf":  # bfloat16: compress its bit patterns
            flat = flat.view(np.uint16)
        rows.extend(flat)
    return coded_map(lambda row: compressor.encode(np.ascontiguousarray(row)), rows,
                     sum(v.nbytes for v in values))


def sharded_object(payloads: Sequence[bytes]) -> bytes:
    """A ``sharding_indexed`` shard object of ``payloads`` (inner chunks in grid order, index
    at the end with ``bytes`` + ``crc32c`` index codecs, zarr's defaults)."""
    sizes = np.array([len(p) for p in payloads], dtype=np.uint64)
    index = np.empty((len(payloads), 2), dtype="<u8")
    index[:, 1] = sizes
    index[:, 0] = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.uint64)
    index_bytes = index.tobytes()
    crc = np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
    return b"".join([*payloads, index_bytes, crc])


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
        zstore = FsspecStore.from_url(store.url_of(path), read_only=True)
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
            record[name] = _column_value(columns, name, i)
        yield record


def iter_direct(group: GroupReader, layout: CacheLayout, fields: Sequence[str],
                steps: Sequence[int] | None = None, select: Selection | None = None
                ) -> Iterator[dict[str, Any]]:
    """Records of one shard group read object by object (``GroupReader``): step fields chunked
    per (sample, step) fetch only the requested steps (``steps`` for every record, or
    ``select[offset][field]`` per record, the other steps left zero); fields a codec stores as
    something else are decoded (``Codec.untransform``) before they are cut to ``steps``."""
    codec = get_codec(layout.codec)
    stored_as = group.attributes().get(CODEC_ATTR, "raw")
    if stored_as != codec.name:
        raise ValueError(f"the group is coded {stored_as!r}, the manifest's layout says "
                         f"{codec.name!r}")
    positions = step_positions(layout, steps)
    wanted = codec.needs(tuple(fields))
    n = group.shape("sample_id")[0]
    columns: dict[str, Any] = {"sample_id": group.full("sample_id")}  # errors name samples
    if select is not None:
        if positions is not None:
            raise ValueError("pass steps (the same steps of every record) or select, not both")
        select = {i: select.get(str(sid), {}) for i, sid in enumerate(columns["sample_id"])}
    try:
        _read_columns(group, layout, wanted, positions, select, columns)
    except ChunkError as exc:
        sid = columns["sample_id"][exc.offset] if exc.offset < n else None
        raise IntegrityError(f"shard {group.path}: sample {sid} {exc}; run `s2dit cache verify "
                             "--deep`", shard=group.path, sample_id=sid) from exc
    yield from _records(group, layout, fields, wanted, positions, columns, codec, n)


def _read_columns(group: GroupReader, layout: CacheLayout, wanted: Sequence[str],
                  positions: list[int] | None, select: dict | None, columns: dict[str, Any]
                  ) -> None:
    """Fill ``columns`` with every ``wanted`` field of the group (and text lengths, codec
    extras); step-chunked fields only at ``positions`` or at each record's ``select``."""
    codec = get_codec(layout.codec)
    n = len(columns["sample_id"])
    sliced: set[str] = columns.setdefault("_sliced", set())  # columns cut to ``positions``
    for name in wanted:
        spec = FIELD_BY_NAME[name]
        if name in columns:
            continue
        if not group.has(name):
            if spec.optional:
                continue
            raise KeyError(f"field {name!r} missing from zarr shard")
        shape = group.shape(name)
        chunked = spec.per_step and len(shape) > 2 and _step_chunked(group, name)
        if chunked and positions is not None:
            coords = [(i, p, *[0] * (len(shape) - 2)) for i in range(n) for p in positions]
            parts = group.chunks(name, coords)
            columns[name] = np.concatenate(parts, axis=1).reshape(n, len(positions), *shape[2:]) \
                if parts else np.empty((n, 0, *shape[2:]))
            sliced.add(name)
        elif chunked and select is not None:
            column = np.zeros(shape, dtype=layout.numpy_dtype(spec))
            coords = [(i, p, *[0] * (len(shape) - 2)) for i in range(n)
                      for p in sorted({int(p) for p in select[i].get(name, ())})]
            bad = next((c for c in coords if not 0 <= c[1] < shape[1]), None)
            if bad is not None:  # the caller's selection, not the shard's bytes
                raise StepNotStored(
                    f"sample {columns['sample_id'][bad[0]]}: the selection asks {name} at "
                    f"position {bad[1]}, the cache stores {shape[1]} steps (positions along S, "
                    f"0..{shape[1] - 1}, not solver steps: layout.step_position(step) maps one)")
            for coord, part in zip(coords, group.chunks(name, coords) if coords else []):
                column[coord[0], coord[1]] = part[0, 0]
            columns[name] = column
        else:
            columns[name] = group.full(name)
        if spec.axes and spec.axes[0] == "L":
            columns[name + LEN_SUFFIX] = group.full(name + LEN_SUFFIX)
    if any(f in codec.transformed for f in wanted):
        columns["_extras"] = {name: group.full(name) for name in codec.extra}
    columns["_checks"] = [json.loads(s) for s in group.full(CHECKSUMS_KEY)]


def _records(group: GroupReader, layout: CacheLayout, fields: Sequence[str],
             wanted: Sequence[str], positions: list[int] | None, columns: dict[str, Any],
             codec: Codec, n: int) -> Iterator[dict[str, Any]]:
    """The records of the read columns; a codec's records decode a few at a time on the codec
    threads (``codecs.parallel``), in order."""
    extras, checks, sliced = columns.get("_extras", {}), \
        columns["_checks"], columns["_sliced"]

    def build(i: int) -> dict[str, Any]:
        record: dict[str, Any] = {CHECKSUMS_KEY: checks[i]}
        for name in wanted:
            if name in columns:
                record[name] = _column_value(columns, name, i)
        if extras:
            stored = {f: record[f] for f in codec.transformed}
            stored.update({name: column[i] for name, column in extras.items()})
            try:
                record.update(codec.untransform(stored, record, layout))
            except (IndexError, TypeError, ValueError) as exc:  # a corrupt predictor or shape
                raise IntegrityError(f"shard {group.path}: sample {record.get('sample_id')} "
                                     f"cannot decode its {codec.name} fields ({exc})",
                                     shard=group.path, sample_id=record.get("sample_id")) from exc
        if positions is not None:
            for name in wanted:
                spec = FIELD_BY_NAME[name]
                if spec.per_step and name not in sliced and name in record:
                    record[name] = np.ascontiguousarray(record[name][positions])
        for name in wanted[len(fields):]:
            record.pop(name, None)  # read only to decode another field
        return record

    window = threads() if extras else 1  # decoded records held at once: the pool's width
    per_record = sum(columns[f][0].nbytes for f in codec.transformed if f in columns) \
        if extras and n else 0
    for start in range(0, n, window):
        batch = range(start, min(n, start + window))
        yield from coded_map(build, batch, per_record * len(batch))


def _step_chunked(group: GroupReader, name: str) -> bool:
    conf = group.meta(name)["codecs"][0].get("configuration", {})
    chunk = conf.get("chunk_shape") or group.meta(name)["chunk_grid"]["configuration"]["chunk_shape"]
    return len(chunk) > 1 and chunk[1] == 1


class Zarr(Encoding):
    """One Zarr v3 group per shard, one inner chunk per (sample, step) (DESIGN 3.4): a reader
    that wants a few steps fetches only those."""

    name = "zarr"
    suffix = ".zarr"
    partial_reads = True

    def encode(self, records: Sequence[dict[str, Any]], layout: CacheLayout) -> dict[str, bytes]:
        return encode_group(records, layout)

    def iter_records(self, store: Store, path: str, layout: CacheLayout, fields: Sequence[str],
                     steps: Sequence[int] | None = None, *, select: Selection | None = None,
                     meter: ReadMeter | None = None) -> Iterator[dict[str, Any]]:
        group = GroupReader(store, path, meter, layout=layout)
        try:
            records = iter_direct(group, layout, fields, steps, select)
            first = next(records, None)
        except Unsupported:  # a group this reader does not parse: zarr reads it whole
            if layout.codec != "raw":
                raise
            yield from iter_group(open_group(store, path), layout, fields, steps,
                                  lambda key: store.read_bytes(f"{path}/{key}"))
            return
        if first is not None:
            yield first
            yield from records

    def objects(self, store: Store, path: str) -> dict[str, int]:
        return {rel.removeprefix(path + "/"): size
                for rel, size in store.walk_files(path).items()}

    def shard_hash(self, object_hashes: dict[str, str]) -> str:
        return group_hash(object_hashes)


def _column_value(columns: dict[str, Any], name: str, i: int) -> Any:
    """Row ``i`` of a decoded column as a record value (text, int, or an array cut to its length)."""
    value, spec = columns[name][i], FIELD_BY_NAME[name]
    if spec.kind is FieldKind.TEXT:
        return str(value)
    if spec.kind is FieldKind.INT:
        return int(value)
    if spec.axes and spec.axes[0] == "L":
        return np.ascontiguousarray(value[: columns[name + LEN_SUFFIX][i]])
    return np.ascontiguousarray(value)
