"""Versioning on top of manifests: lineage, tags, diffs and garbage collection (DESIGN 3.3).

Every operation writes new objects only; earlier generations stay readable byte for byte.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import ManifestError, OperationRefused
from .fingerprint import diff_fingerprints
from .index import INDEX_DIR, STATUS_OK, read_index
from .lease import live_leases
from .manifest import (
    MANIFEST_DIR,
    TAG_DIR,
    check_location,
    list_generations,
    read_manifest,
    require_generations,
    resolve_generation,
)
from .store import Store, open_store, split_ref
from .writer import SHARD_DIR

_TAG_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def lineage(url: str) -> list[dict[str, Any]]:
    """Generations newest first: operation and its arguments (``extra["args"]``), parent, time,
    samples, producer version."""
    store = open_store(split_ref(url)[0])
    rows = []
    for gen in reversed(require_generations(store)):
        m = read_manifest(store, gen)
        rows.append({"generation": gen, "operation": m.operation, "parent": m.parent,
                     "args": m.extra.get("args", {}),
                     "created_at": m.created_at, "samples": m.num_samples,
                     "shards": len(m.shards), "producer_version": m.producer_version})
    return rows


def set_tag(url: str, name: str, generation: int | None = None) -> int:
    """Point tag ``name`` at a generation (default newest); tags may move, generations never."""
    if not name or set(name) - _TAG_OK or name.isdigit():
        raise ManifestError(f"bad tag name {name!r}: use letters, digits, '_', '-' or '.', "
                            "not a bare number (that would read as a generation)")
    store = open_store(split_ref(url)[0])
    gen = resolve_generation(store, generation)
    store.put_bytes(f"{TAG_DIR}/{name}.json", json.dumps({"generation": gen, "tagged_at": time.time()}).encode())
    return gen


def list_tags(url: str) -> dict[str, int]:
    store = open_store(split_ref(url)[0])
    return {rel.rsplit("/", 1)[-1].removesuffix(".json"): json.loads(store.read_bytes(rel))["generation"]
            for rel in store.list(TAG_DIR) if rel.endswith(".json")}


def _live_ids(store: Store, gen: int) -> set[str]:
    table = read_index(store, read_manifest(store, gen))
    return {sid for sid, st in zip(table.column("sample_id").to_pylist(),
                                   table.column("status").to_pylist()) if st == STATUS_OK}


def diff(url: str, from_ref: str | int, to_ref: str | int) -> dict[str, Any]:
    """Two generations of one cache: samples added and removed, fingerprint and schema changes."""
    base = split_ref(url)[0]
    return diff_caches(f"{base}@{from_ref}", f"{base}@{to_ref}")


def diff_caches(url_a: str, url_b: str) -> dict[str, Any]:
    """``url_a`` -> ``url_b`` (each ``URL[@ref]``, newest without a ref), possibly two caches."""
    sides = []
    for url in (url_a, url_b):
        base, ref = split_ref(url)
        store = open_store(base)
        gen = resolve_generation(store, ref)
        sides.append((store, gen, read_manifest(store, gen)))
    (sa, a, ma), (sb, b, mb) = sides
    ids_a, ids_b = _live_ids(sa, a), _live_ids(sb, b)
    same = sa.url == sb.url
    return {"from": a if same else f"{sa.url}@{a}", "to": b if same else f"{sb.url}@{b}",
            "added": len(ids_b - ids_a), "removed": len(ids_a - ids_b),
            "added_ids": sorted(ids_b - ids_a)[:20], "removed_ids": sorted(ids_a - ids_b)[:20],
            "fingerprint_changes": diff_fingerprints(ma.fingerprint, mb.fingerprint),
            "schema_version": [ma.schema_version, mb.schema_version],
            "layout_changed": ma.layout != mb.layout,
            "layout_changes": diff_fingerprints(ma.layout.to_json(), mb.layout.to_json()),
            "encoding": [ma.encoding, mb.encoding],
            "cache_id": [ma.cache_id, mb.cache_id]}


# Below this an orphan may be a writer's shard that is not committed yet: the lease protects
# writers that hold one, this covers those that do not (another tool, an older s2dit) and a
# store whose timestamps lag. ``allow_short_grace`` is for tests and users who know.
MIN_GRACE_SECONDS = 3600.0


@dataclass
class GcResult:
    orphans: list[str]
    deleted: list[str]
    kept_young: list[str]
    kept_leased: list[str] = field(default_factory=list)  # not older than a live lease's start
    live_leases: list[str] = field(default_factory=list)
    expired_leases: list[str] = field(default_factory=list)  # removed unless dry_run


def gc(url: str, *, grace_seconds: float = 24 * 3600, dry_run: bool = False,
       allow_short_grace: bool = False) -> GcResult:
    """Delete shard and index objects no generation references, older than the grace period
    and older than the start of every live writer lease (``lease``).

    Only this cache's own shards/ and index/ folders are looked at: shards it references in
    another cache (append or merge by reference) are never touched, and its own committed
    shards stay named by its immutable manifests, so caches referencing them stay readable.
    A grace below ``MIN_GRACE_SECONDS`` is refused unless ``allow_short_grace``.
    """
    if grace_seconds < MIN_GRACE_SECONDS and not allow_short_grace:
        raise OperationRefused(
            f"a gc grace of {grace_seconds:g} s is below the minimum of {MIN_GRACE_SECONDS:g} s "
            "(1h): a writer that holds no lease may still be about to commit younger orphans; "
            "pass --allow-short-grace (allow_short_grace=True) if you know none is running")
    store = open_store(split_ref(url)[0])
    check_location(store)  # a job's uncommitted shards are gc's to clean; a wrong URL is not
    # Leases first: a writer that starts after this read writes objects newer than ``now``,
    # which the grace period keeps (grace > 0) and the lease check below keeps anyway.
    now = time.time()
    leases = live_leases(store, now)
    referenced: set[str] = set()
    for gen in list_generations(store):
        m = read_manifest(store, gen)  # a corrupt manifest stops gc: never guess what it named
        referenced.update(s.path for s in m.shards if s.root is None)  # others live elsewhere
        referenced.add(m.index_path)
    result = GcResult(orphans=[], deleted=[], kept_young=[], live_leases=leases.live,
                      expired_leases=leases.expired)
    for top in (SHARD_DIR, INDEX_DIR):
        for rel in store.list(top):
            name = rel.rsplit("/", 1)[-1]
            if name.startswith(".") and name.endswith(".tmp"):
                pass  # a crashed create-only put's temp file: an orphan too
            elif rel in referenced:
                continue
            result.orphans.append(rel)
            objects = store.walk_files(rel) or {rel: 0}
            stamps = [store.modified(o) for o in objects]
            newest = max((s for s in stamps if s is not None), default=None)
            if newest is not None and now - newest < grace_seconds:
                result.kept_young.append(rel)
                continue
            if leases.protect_from is not None and (newest is None or newest >= leases.protect_from):
                result.kept_leased.append(rel)
                continue
            if not dry_run:
                store.delete(rel)
                result.deleted.append(rel)
    if not dry_run:
        for rel in leases.expired:
            store.delete(rel)
    return result


__all__ = ["MANIFEST_DIR", "MIN_GRACE_SECONDS", "GcResult", "diff", "diff_caches", "gc", "lineage", "list_tags", "set_tag"]
