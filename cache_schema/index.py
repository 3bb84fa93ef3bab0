"""The sample index of a generation: a Parquet table (sample_id, shard, offset, prompt, seed,
status). ``status`` is ``ok`` or ``removed`` (tombstones of filter generations).

The manifest pins the index object (sha256 and size, schema >= 2), and ``read_index`` checks
the table against the manifest before anyone trusts it: the schema, each sample id once, every
row in a shard the manifest names at an offset that shard holds, each shard's rows complete,
and the live count the manifest states. A flipped byte is an IntegrityError, never a cache of
tombstones.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from .checksum import sha256_bytes
from .errors import AlreadyExists, IntegrityError
from .index_guard import guarded_table, parse_inline, trust
from .paths import INDEX_DIR
from .store import Store

if TYPE_CHECKING:
    from .manifest import Manifest

STATUS_OK = "ok"
STATUS_REMOVED = "removed"
INDEX_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("shard", pa.string()), ("offset", pa.int64()),
    ("prompt", pa.string()), ("seed", pa.int64()), ("status", pa.string()),
])

IndexRow = tuple[str, str, int, str, int, str]


def rows_table(rows: Iterable[IndexRow]) -> pa.Table:
    columns = list(zip(*rows)) or [[] for _ in INDEX_SCHEMA]
    return pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(columns, INDEX_SCHEMA)],
                                schema=INDEX_SCHEMA)


def index_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table.cast(INDEX_SCHEMA), buf)
    return buf.getvalue()


def write_index(store: Store, generation: int, table: pa.Table) -> tuple[str, str, int]:
    """Put the index of ``generation`` (create-only); (path, sha256, bytes) for the manifest."""
    data = index_bytes(table)
    trust(data)  # our own bytes: reading them back needs no guarded parse
    rel = f"{INDEX_DIR}/{generation:06d}.{uuid.uuid4().hex[:8]}.parquet"
    try:
        store.put_create_only(rel, data)
    except AlreadyExists:
        # A fresh random name already present: our own put whose reply was lost, then retried.
        if store.read_bytes(rel) != data:  # put_create_only dropped s3fs's stale entry
            raise
    return rel, sha256_bytes(data), len(data)


def _read_fresh(store: Store, rel: str) -> bytes:
    """The object's bytes, never a cached "missing": s3fs answers FileNotFoundError from a stale
    listing of the folder (no request) when the listing was cached before the object existed
    (seen through the fault proxy, tests/faults/test_job_through_faults.py; the create-only put
    itself drops the entry, Store.put_create_only)."""
    store.fs.invalidate_cache(store.path(rel))
    return store.read_bytes(rel)


def parse_index(data: bytes, where: str) -> pa.Table:
    """The table in Parquet bytes, with exactly the index schema; IntegrityError otherwise.
    Bytes not seen before are parsed in a bounded child process (index_guard.py)."""
    try:
        table = guarded_table(data, where, INDEX_SCHEMA, parse_inline)
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError) as exc:
        raise IntegrityError(f"sample index {where} is not readable Parquet "
                             f"({type(exc).__name__}: {exc}); run `s2dit cache verify`") from None
    if not table.schema.remove_metadata().equals(INDEX_SCHEMA):
        raise IntegrityError(f"sample index {where} has columns {table.schema.names} "
                             f"({', '.join(str(t) for t in table.schema.types)}), not the index "
                             "schema (sample_id, shard, offset, prompt, seed, status)")
    return table


def check_index(table: pa.Table, manifest: Manifest, where: str) -> None:
    """The index agrees with its manifest (module docstring); IntegrityError names the row."""
    columns = {name: table.column(name).to_pylist() for name in INDEX_SCHEMA.names}
    for name, values in columns.items():
        if None in values:
            raise IntegrityError(f"sample index {where}: column {name} holds a null "
                                 f"(row {values.index(None)})")
    samples = {s.name: s.samples for s in manifest.shards}
    seen: dict[str, set[int]] = {name: set() for name in samples}
    ids: set[str] = set()
    live = 0
    for row, (sid, shard, offset, status) in enumerate(zip(
            columns["sample_id"], columns["shard"], columns["offset"], columns["status"])):
        if sid in ids:
            raise IntegrityError(f"sample index {where}: sample id {sid} appears twice (row "
                                 f"{row}); a cache holds each sample once", sample_id=sid)
        ids.add(sid)
        if shard not in samples:
            raise IntegrityError(f"sample index {where}: row {row} (sample {sid}) names shard "
                                 f"{shard!r}, which the manifest does not list", sample_id=sid)
        if not 0 <= offset < samples[shard] or offset in seen[shard]:
            raise IntegrityError(f"sample index {where}: row {row} (sample {sid}) has offset "
                                 f"{offset} in shard {shard} of {samples[shard]} records "
                                 "(out of range or repeated)", shard=shard, sample_id=sid)
        seen[shard].add(offset)
        if status == STATUS_OK:
            live += 1
        elif status != STATUS_REMOVED:
            raise IntegrityError(f"sample index {where}: row {row} (sample {sid}) has status "
                                 f"{status!r}, not {STATUS_OK!r} or {STATUS_REMOVED!r}",
                                 sample_id=sid)
    short = {name: n - len(seen[name]) for name, n in samples.items() if len(seen[name]) != n}
    for name, missing in short.items():
        raise IntegrityError(f"sample index {where}: shard {name} has {missing} records without an "
                             "index row (the index is truncated)", shard=name)
    if live != manifest.num_samples:
        raise IntegrityError(f"sample index {where}: {live} live samples, the manifest says "
                             f"{manifest.num_samples}")


def read_index(store: Store, source: Manifest | str) -> pa.Table:
    """The index of a manifest, checked against it (pin, schema, rows: the module docstring).

    A bare path (``str``) reads the table unchecked, for a tool that already holds a manifest's
    index path and rewrites it; every reader of a cache passes the manifest.
    """
    rel = source if isinstance(source, str) else source.index_path
    where = store.url_of(rel)
    try:
        data = _read_fresh(store, rel)
    except FileNotFoundError:
        raise IntegrityError(f"sample index {where} named by the manifest is missing; the "
                             "generation cannot be read (restore the object or use another "
                             "generation)") from None
    if isinstance(source, str):
        return parse_index(data, where)
    if source.index_sha256 is not None and (len(data) != source.index_bytes
                                            or sha256_bytes(data) != source.index_sha256):
        raise IntegrityError(f"sample index {where} does not match the sha256/size its manifest "
                             f"(generation {source.generation}) pins: modified or corrupt; run "
                             "`s2dit cache verify`")
    table = parse_index(data, where)
    check_index(table, source, where)
    return table
