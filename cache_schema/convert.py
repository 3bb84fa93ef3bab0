"""``convert``: re-encode a generation (wds <-> zarr) into a new cache, checksums checked.

Every live record is read with its stored per-tensor checksums (which it must match), written
in the target encoding one output shard per input shard (same names: deterministic), read back
from the target store, and each tensor's checksum compared with the source's. A mismatch
anywhere aborts before the manifest: nothing is committed.
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from .checksum import tensor_checksum
from .encodings import ENCODINGS
from .encodings.common import resolve_fields
from .errors import IntegrityError, OperationRefused
from .fields import CHECKSUMS_KEY
from .index import rows_table
from .manifest import list_generations
from .operations import OpResult, _open
from .reader import CacheReader, decode_shard
from .store import open_store, split_ref
from .writer import commit_manifest, write_shard_to_store


def _check_roundtrip(written, expected: dict[str, dict[str, str]], shard: str) -> int:
    count = 0
    for record in written:
        sums = expected.pop(record["sample_id"], None)
        if sums is None:
            raise IntegrityError(f"converted shard {shard} holds an unexpected sample "
                                 f"{record['sample_id']}", shard=shard)
        for name, digest in sums.items():
            if name in record and tensor_checksum(record[name]) != digest:
                raise IntegrityError(f"converted shard {shard}: sample {record['sample_id']} field "
                                     f"{name} differs from the source after conversion",
                                     shard=shard, sample_id=record["sample_id"])
        count += 1
    if expected:
        raise IntegrityError(f"converted shard {shard} lacks {len(expected)} samples", shard=shard)
    return count


def convert(url: str, *, to: str, output: str, storage_options: dict[str, Any] | None = None,
            progress: bool = True) -> OpResult:
    """A new cache ``output`` (operation "convert") holding ``url``'s live samples as ``to``."""
    if to not in ENCODINGS:
        raise OperationRefused(f"unknown encoding {to!r}: use one of {', '.join(ENCODINGS)}")
    src = _open(url, storage_options)
    dst = open_store(split_ref(output)[0], storage_options)
    if list_generations(dst):
        raise OperationRefused(f"{dst.url} already holds a cache; convert writes a new cache: "
                               "choose an empty --output")
    reader = CacheReader(src.ref, storage_options)
    layout, shards, rows = src.manifest.layout, [], []
    for shard in tqdm(src.manifest.shards, desc=f"convert to {to}", unit="shard", disable=not progress):
        records = list(reader.read_shard(shard, verify=True, keep_checksums=True))
        if not records:
            continue  # every sample of this shard is tombstoned
        expected = {r["sample_id"]: dict(r[CHECKSUMS_KEY]) for r in records}
        for record in records:
            record.pop(CHECKSUMS_KEY)
        written = write_shard_to_store(dst, records, layout=layout, encoding=to, shard_name=shard.name)
        _check_roundtrip(decode_shard(dst, written, layout, resolve_fields(None)), expected, written.path)
        shards.append(written)
        rows.extend(written.index)
    manifest = commit_manifest(
        dst, parent=None, shards=tuple(shards), index_table=rows_table(rows), layout=layout,
        fingerprint=src.manifest.fingerprint, encoding=to, operation="convert",
        extra={"args": {"from": src.ref, "source_cache_id": src.manifest.cache_id, "to": to}})
    return OpResult(manifest, added=len(rows))
