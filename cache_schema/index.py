"""The sample index of a generation: a Parquet table (sample_id, shard, offset, prompt, seed,
status). ``status`` is ``ok`` or ``removed`` (tombstones of filter generations)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from .store import Store

INDEX_DIR = "index"
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


def write_index(store: Store, generation: int, table: pa.Table) -> str:
    buf = io.BytesIO()
    pq.write_table(table.cast(INDEX_SCHEMA), buf)
    rel = f"{INDEX_DIR}/{generation:06d}.{uuid.uuid4().hex[:8]}.parquet"
    store.put_create_only(rel, buf.getvalue())
    return rel


def read_index(store: Store, rel: str) -> pa.Table:
    return pq.read_table(io.BytesIO(store.read_bytes(rel)))
