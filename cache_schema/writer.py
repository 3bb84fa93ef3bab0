"""Writing caches: shards first (hashed, unreferenced), then a manifest generation, last.

``write_shard`` + ``commit_generation`` are the distributed form (Ray workers write shards,
the driver commits); ``CacheWriter`` is the single-process form that buffers records into
shards and uploads them in a background thread so the producer is not blocked.
A crash at any point leaves either the old generation or the new one visible, never a part:
nothing is referenced until the create-only manifest put succeeds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Self

import pyarrow as pa

from .bounds import MAX_SHARD_SAMPLES
from .checksum import sha256_bytes
from .encodings import DEFAULT_ENCODING, get_encoding, object_path
from .encodings.step_checksums import record_and_step_checksums
from .errors import (
    AlreadyExists,
    CacheError,
    FingerprintMismatch,
    GenerationConflict,
    IntegrityError,
)
from .fields import CHECKSUMS_KEY, CacheLayout, validate_record
from .fingerprint import canonical_json, diff_fingerprints
from .index import STATUS_OK, read_index, rows_table, write_index
from .lease import DEFAULT_TTL, WriterLease
from .manifest import (
    Manifest,
    ShardInfo,
    list_generations,
    manifest_rel,
    read_manifest,
    shard_union,
    write_manifest,
)
from .redact import redact_secrets
from .store import Store, open_store, split_ref

SHARD_DIR = "shards"


def prepare_record(record: dict[str, Any], layout: CacheLayout) -> None:
    """Validate ``record`` and add its per-tensor and per-step checksums (before a single byte
    is written): always over the values, whatever codec stores them."""
    validate_record(record, layout)
    record[CHECKSUMS_KEY] = record_and_step_checksums(record)  # one crc pass over the step fields


def _put_hashed(store: Store, rel: str, data: bytes) -> str:
    """Put ``data`` and return its sha256; hashing runs beside the write (both release the GIL)."""
    if len(data) < 1 << 20:
        store.put_bytes(rel, data)
        return sha256_bytes(data)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-hash") as pool:
        digest = pool.submit(sha256_bytes, data)
        store.put_bytes(rel, data)
        return digest.result()


def write_shard_to_store(store: Store, records: Sequence[dict[str, Any]], *, layout: CacheLayout,
                         encoding: str, shard_name: str, prepared: bool = False) -> ShardInfo:
    """``prepared``: every record already went through ``prepare_record`` (CacheWriter does it
    in the producer's thread, so the upload thread only encodes, writes and hashes)."""
    encoder = get_encoding(encoding)  # the Encoding named ``encoding``
    encoder.check_layout(layout)
    if not records:
        raise ValueError(f"shard {shard_name!r} has no records")
    if len(records) > MAX_SHARD_SAMPLES:
        raise ValueError(f"shard {shard_name!r} has {len(records)} records, more than the "
                         f"{MAX_SHARD_SAMPLES} a reader accepts")
    if "." in shard_name or "/" in shard_name:
        raise ValueError(f"shard name {shard_name!r} may not contain '.' or '/'")
    if not prepared:
        for record in records:  # everything is validated before a single byte is written
            prepare_record(record, layout)
    nonce = uuid.uuid4().hex[:8]  # a retried unit never overwrites an earlier attempt's objects
    objects = encoder.encode(records, layout)
    rel = f"{SHARD_DIR}/{shard_name}.{nonce}{encoder.suffix}"
    hashes = {key: _put_hashed(store, object_path(rel, key), data) for key, data in objects.items()}
    digest, size = encoder.shard_hash(hashes), sum(len(d) for d in objects.values())
    rows = tuple((r["sample_id"], shard_name, i, r["prompt"], int(r["seed"]), STATUS_OK)
                 for i, r in enumerate(records))
    return ShardInfo(name=shard_name, path=rel, encoding=encoding, bytes=size, sha256=digest,
                     samples=len(records), index=rows)


def write_shard(url: str, records: Sequence[dict[str, Any]], *, layout: CacheLayout, encoding: str,
                shard_name: str) -> ShardInfo:
    """Write one shard (validated, hashed, create-only path); no manifest refers to it yet."""
    return write_shard_to_store(open_store(split_ref(url)[0]), records,
                                layout=layout, encoding=encoding, shard_name=shard_name)


def _index_for(store: Store, parent: Manifest | None, shards: Sequence[ShardInfo]) -> pa.Table:
    parent_table = read_index(store, parent) if parent else None
    parent_names = {s.name for s in parent.shards} if parent else set()
    rows = []
    for shard in shards:
        if shard.name in parent_names:
            continue
        if shard.index is None:
            raise CacheError(f"shard {shard.name} carries no index rows; pass the ShardInfo "
                             "returned by write_shard")
        rows.extend(shard.index)
    new = rows_table(rows)
    table = pa.concat_tables([parent_table, new]) if parent_table is not None else new
    check_unique_ids(table, store.url)
    return table


def check_unique_ids(table: pa.Table, where: str, hint: str = "") -> None:
    """A cache holds each sample once: refuse an index with a repeated sample id."""
    ids = table.column("sample_id").to_pylist()
    if len(set(ids)) != len(ids):
        seen, dupes = set(), set()
        for sid in ids:
            (dupes if sid in seen else seen).add(sid)
        raise CacheError(f"{len(dupes)} sample ids would appear twice in {where} "
                         f"(e.g. {sorted(dupes)[:3]}); the cache must hold each sample once"
                         + (f": {hint}" if hint else ""))


def commit_manifest(store: Store, *, parent: Manifest | None, shards: Sequence[ShardInfo],
                    index_table: pa.Table, layout: CacheLayout, fingerprint: dict[str, Any],
                    encoding: str, operation: str, extra: dict[str, Any] | None = None) -> Manifest:
    """Take generation parent+1 (create-only). Raises GenerationConflict if another writer did."""
    generation = (parent.generation if parent else 0) + 1
    check_shards_stored(store, shards, committed=parent.shards if parent else ())
    index_rel, index_sha256, index_size = write_index(store, generation, index_table)
    live = sum(1 for s in index_table.column("status").to_pylist() if s == STATUS_OK)
    manifest = Manifest(
        generation=generation, cache_id=parent.cache_id if parent else uuid.uuid4().hex,
        fingerprint=fingerprint, layout=layout, encoding=encoding, shards=tuple(shards),
        index_path=index_rel, num_samples=live, operation=operation,
        parent=parent.generation if parent else None, extra=redact_secrets(dict(extra or {})),
        index_sha256=index_sha256, index_bytes=index_size)
    try:
        write_manifest(store, manifest)
    except AlreadyExists:
        # A create whose reply was lost and then retried finds its own manifest: that is success.
        if _committed_bytes(store, manifest) == manifest.to_bytes():
            return manifest
        store.delete(index_rel)
        raise GenerationConflict(f"generation {generation} of {store.url} was committed by another "
                                 "writer first") from None
    return manifest


def check_shards_stored(store: Store, shards: Sequence[ShardInfo],
                        committed: Sequence[ShardInfo] = ()) -> None:
    """Every shard of this store a commit adds exists with its recorded size, else IntegrityError
    naming it (gc or a person may have removed it, or an upload stopped half way).

    Sizes only: the sha256 a ShardInfo carries was computed by the writer from the very bytes it
    put (never re-read), so re-hashing here would read every shard a second time; ``verify``
    re-hashes. Shards the parent already names were checked when they were committed, and
    shards referenced in another cache (``root``) are that cache's committed objects.
    """
    known = {s.path for s in committed}
    for shard in shards:
        if shard.root is not None or shard.path in known:
            continue
        try:
            objects = get_encoding(shard.encoding).objects(store, shard.path)
        except FileNotFoundError:
            objects = {}
        if not objects:
            raise IntegrityError(f"shard {shard.name} ({store.url_of(shard.path)}) is missing; "
                                 "refusing to commit a generation that names it (was it removed "
                                 "by `s2dit cache gc` or by hand?); rerun the writer",
                                 shard=shard.path)
        size = sum(objects.values())
        if size != shard.bytes:
            raise IntegrityError(f"shard {shard.name} ({store.url_of(shard.path)}) has {size} "
                                 f"bytes stored, its writer recorded {shard.bytes} (truncated or "
                                 "rewritten); refusing to commit it; rerun the writer",
                                 shard=shard.path)


def _committed_bytes(store: Store, manifest: Manifest) -> bytes | None:
    try:
        return store.read_bytes(manifest_rel(manifest.generation))
    except FileNotFoundError:
        return None


def check_compatible(parent: Manifest, fingerprint: dict[str, Any], layout: CacheLayout,
                     encoding: str, where: str) -> None:
    if canonical_json(parent.fingerprint) != canonical_json(fingerprint):
        diff = "\n  ".join(diff_fingerprints(parent.fingerprint, fingerprint))
        raise FingerprintMismatch(f"{where} was made with a different teacher fingerprint; "
                                  f"refusing to mix them. Differences (cache -> new):\n  {diff}")
    if parent.layout != layout:
        raise FingerprintMismatch(f"{where} has layout {parent.layout.to_json()}, "
                                  f"new data has {layout.to_json()}")
    if parent.encoding != encoding:
        raise FingerprintMismatch(f"{where} is encoded as {parent.encoding}, not {encoding}; "
                                  "convert one of them first")


def commit_generation(url: str, *, shards: Sequence[ShardInfo], layout: CacheLayout,
                      fingerprint: dict[str, Any], operation: str = "append",
                      parent: int | None = None, extra: dict[str, Any] | None = None,
                      retries: int = 8) -> Manifest:
    """Commit a generation holding the newest generation's shards plus ``shards``.

    With ``parent`` given, a newer generation committed meanwhile is a GenerationConflict;
    without it, a lost race retries onto the next generation (nothing is lost).
    """
    store = open_store(split_ref(url)[0])
    encodings = {s.encoding for s in shards}
    if len(encodings) > 1:
        raise ValueError(f"shards mix encodings {sorted(encodings)}")
    encoding = encodings.pop() if encodings else None
    for attempt in range(retries):
        gens = list_generations(store)
        base = read_manifest(store, gens[-1]) if gens else None
        if parent is not None and (base is None or base.generation != parent):
            raise GenerationConflict(f"{store.url}: expected newest generation {parent}, found "
                                     f"{base.generation if base else 'none'}")
        enc = encoding or (base.encoding if base else DEFAULT_ENCODING)
        if base:
            check_compatible(base, fingerprint, layout, enc, store.url)
        all_shards = shard_union(base, shards)
        try:
            return commit_manifest(store, parent=base, shards=all_shards,
                                   index_table=_index_for(store, base, all_shards), layout=layout,
                                   fingerprint=fingerprint, encoding=enc,
                                   operation=operation if base else "create", extra=extra)
        except GenerationConflict:
            if parent is not None or attempt == retries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


class CacheWriter:
    """Buffer records into shards, upload in the background, commit a generation at the end.

    Records are validated in ``write`` (before anything is written) and must not be mutated by
    the caller afterwards. On an exception inside ``with`` nothing is committed.
    """

    def __init__(self, url: str, *, layout: CacheLayout, fingerprint: dict[str, Any],
                 encoding: str = DEFAULT_ENCODING, samples_per_shard: int = 256,
                 config: dict[str, Any] | None = None, shard_prefix: str | None = None,
                 max_pending: int = 2, lease_ttl: float = DEFAULT_TTL):
        get_encoding(encoding).check_layout(layout)  # unknown name or codec: fails before any work
        if not 1 <= samples_per_shard <= MAX_SHARD_SAMPLES:
            raise ValueError(f"samples_per_shard must be in [1, {MAX_SHARD_SAMPLES}] (what a "
                             f"reader accepts), got {samples_per_shard}")
        self.url = split_ref(url)[0]
        self.store = open_store(self.url)
        self.layout, self.fingerprint, self.encoding = layout, fingerprint, encoding
        self.samples_per_shard = samples_per_shard
        self.config = config
        self.prefix = shard_prefix or f"w{uuid.uuid4().hex[:8]}-"
        self._buffer: list[dict[str, Any]] = []
        self._pending: list[Future[ShardInfo]] = []
        self._max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-upload")
        self._count = 0
        self.manifest: Manifest | None = None
        # held from the first shard to the commit, so that gc leaves our uncommitted shards alone
        self.lease = WriterLease(self.store, what="CacheWriter", ttl=lease_ttl)
        gens = list_generations(self.store)  # refuse a mismatched cache before any work is done
        if gens:
            check_compatible(read_manifest(self.store, gens[-1]), fingerprint, layout, encoding,
                             self.store.url)

    def write(self, record: dict[str, Any]) -> None:
        prepare_record(record, self.layout)  # here, in the producer's thread: raises at once
        self._buffer.append(record)
        if len(self._buffer) >= self.samples_per_shard:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        records, self._buffer = self._buffer, []
        self.lease.start()
        name = f"{self.prefix}{self._count:06d}"
        self._count += 1
        # Backpressure: at most max_pending shards in flight, so memory stays bounded.
        while len([f for f in self._pending if not f.done()]) >= self._max_pending:
            next(f for f in self._pending if not f.done()).result()
        self._pending.append(self._pool.submit(
            write_shard_to_store, self.store, records, layout=self.layout, encoding=self.encoding,
            shard_name=name, prepared=True))

    def commit(self, operation: str = "append") -> Manifest:
        try:
            self._flush()
            shards = [f.result() for f in self._pending]
            self._pool.shutdown(wait=True)
            extra = {"config": self.config} if self.config is not None else None
            self.manifest = commit_generation(self.url, shards=shards, layout=self.layout,
                                              fingerprint=self.fingerprint, operation=operation,
                                              extra=extra)
        finally:
            self.lease.end()
        return self.manifest

    def abort(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._buffer.clear()
        self.lease.end()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

