"""Adopting orphans: shards a writer finished but never committed (its driver died between the
upload and the manifest), taken into the next generation after a deep verify instead of being
produced again (issue 27: a driver death could leave 16 shards, ~43 H100-hours, behind).

A writer that wants its shards adoptable leaves a receipt beside each one (``write_receipt``:
the ShardInfo, the fingerprint digest it was written under, and whatever the writer wants back,
such as its rejections). ``find_adoptable`` reads the receipts under shards/ and adopts a shard
only when its receipt is for this fingerprint and names a shard the writer still wants, every
object is present with the receipt's size, the bytes hash to the receipt's sha256, and every
record decodes, passes its per-field checksums and is one of the wanted samples, in order.
Anything else stays an orphan (its unit is produced again) and ``gc`` removes it like any
unreferenced object under shards/, receipts included, after the grace period.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .checksum import check_record_checksums, sha256_bytes
from .encodings import get_encoding, object_path
from .errors import CacheError
from .fields import CHECKSUMS_KEY, FIELD_NAMES, CacheLayout
from .index import STATUS_OK
from .manifest import ShardInfo
from .reader import decode_shard
from .store import Store
from .writer import SHARD_DIR

RECEIPT_SUFFIX = ".receipt.json"


def drop_receipts(store: Store, shards: Sequence[ShardInfo]) -> None:
    """After the commit that names them (best effort: gc removes what is left)."""
    for shard in shards:
        try:
            store.delete(shard.path + RECEIPT_SUFFIX)
        except (FileNotFoundError, OSError):
            pass


def write_receipt(store: Store, shard: ShardInfo, fingerprint_digest: str,
                  extra: Mapping[str, Any] | None = None) -> None:
    """After the shard's objects: the receipt's presence means the upload finished."""
    body = {"fingerprint_digest": fingerprint_digest, "shard": shard.to_json(),
            "extra": dict(extra or {})}
    store.put_bytes(shard.path + RECEIPT_SUFFIX, json.dumps(body, ensure_ascii=False).encode())


@dataclass
class Adoption:
    shards: list[ShardInfo] = field(default_factory=list)  # verified, with their index rows
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # shard name -> receipt extra
    rejected: dict[str, str] = field(default_factory=dict)  # shard path -> why not adopted


def find_adoptable(store: Store, *, layout: CacheLayout, fingerprint_digest: str,
                   wanted: Mapping[str, Sequence[str]]) -> Adoption:
    """Uncommitted shards of ``wanted`` (shard name -> the sample ids it may hold, in order) that
    pass a deep verify; at most one per name."""
    found = Adoption()
    try:
        listing = store.list(SHARD_DIR)
    except FileNotFoundError:
        return found
    for rel in sorted(r for r in listing if r.endswith(RECEIPT_SUFFIX)):
        if rel.rsplit("/", 1)[-1].split(".", 1)[0] not in wanted:
            continue  # a committed shard's receipt, or another job's: not even read
        try:
            body = json.loads(store.read_bytes(rel))
            shard = ShardInfo.from_json(body["shard"])
        except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
            found.rejected[rel] = f"unreadable receipt ({type(exc).__name__})"
            continue
        if body.get("fingerprint_digest") != fingerprint_digest or shard.name not in wanted:
            continue  # another job's shard (an older corpus or recipe): not ours to judge
        if shard.name in found.extra:
            continue  # a retried unit's second upload: one is enough
        if shard.path + RECEIPT_SUFFIX != rel or shard.root is not None:
            found.rejected[rel] = "the receipt names another path"
            continue
        try:
            rows = _deep_verify(store, shard, layout, wanted[shard.name])
        except (CacheError, FileNotFoundError, *get_encoding(shard.encoding).read_errors) as exc:
            found.rejected[shard.path] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        found.shards.append(ShardInfo(name=shard.name, path=shard.path, encoding=shard.encoding,
                                      bytes=shard.bytes, sha256=shard.sha256,
                                      samples=shard.samples, index=rows))
        found.extra[shard.name] = dict(body.get("extra") or {})
    return found


def _deep_verify(store: Store, shard: ShardInfo, layout: CacheLayout,
                 wanted: Sequence[str]) -> tuple:
    encoding = get_encoding(shard.encoding)
    objects = encoding.objects(store, shard.path)
    if not objects or sum(objects.values()) != shard.bytes:
        raise CacheError(f"{sum(objects.values())} bytes stored, the receipt says {shard.bytes}")
    digest = encoding.shard_hash({key: sha256_bytes(store.read_bytes(object_path(shard.path, key)))
                                  for key in objects})
    if digest != shard.sha256:
        raise CacheError("sha256 mismatch (corrupt bytes)")
    rows, position = [], 0
    for offset, record in enumerate(decode_shard(store, shard, layout, FIELD_NAMES)):
        check_record_checksums(record, record.get(CHECKSUMS_KEY) or {}, shard.path)
        sid = record.get("sample_id")
        while position < len(wanted) and wanted[position] != sid:
            position += 1  # samples the writer rejected are missing, never reordered
        if position == len(wanted):
            raise CacheError(f"record {offset} is sample {sid}, not one of this unit's in order")
        position += 1
        rows.append((sid, shard.name, offset, record["prompt"], int(record["seed"]), STATUS_OK))
    if len(rows) != shard.samples:
        raise CacheError(f"{len(rows)} records, the receipt says {shard.samples}")
    return tuple(rows)
