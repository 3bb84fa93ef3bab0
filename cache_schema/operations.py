"""Versioning operations that make new generations (DESIGN 3.3): append, filter, dedup, merge.

Each one reads committed generations, writes new objects only (an index, perhaps copied
shards) and commits a create-only manifest last; a refusal raises before anything is written.
Shards are never rewritten: filters are tombstones in the sample index.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa

from .checksum import sha256_bytes
from .errors import OperationRefused
from .filter_expr import evaluate_where
from .index import STATUS_OK, STATUS_REMOVED, read_index
from .lease import WriterLease
from .manifest import Manifest, ShardInfo, list_generations, read_manifest, resolve_generation
from .store import Store, open_store, split_ref
from .transfer import bring
from .writer import check_compatible, check_unique_ids, commit_manifest


@dataclass
class OpResult:
    manifest: Manifest | None  # None when there was nothing to do
    removed: int = 0
    added: int = 0
    copied_shards: int = 0
    referenced_shards: int = 0
    unknown_ids: tuple[str, ...] = ()


@dataclass
class _Source:
    store: Store
    manifest: Manifest
    ref: str  # url@generation, for lineage

    @property
    def index(self) -> pa.Table:
        return read_index(self.store, self.manifest)


def _open(url: str) -> _Source:
    base, ref = split_ref(url)
    store = open_store(base)
    manifest = read_manifest(store, resolve_generation(store, ref))
    return _Source(store, manifest, f"{store.url}@{manifest.generation}")


def _open_target(url: str) -> _Source:
    """The cache an operation extends: its newest generation (a ref must name that one)."""
    target = _open(url)
    newest = list_generations(target.store)[-1]
    if target.manifest.generation != newest:
        raise OperationRefused(
            f"{url} names generation {target.manifest.generation}, but a new generation extends "
            f"the newest one ({newest}); drop the @ref (to start from an old generation, filter "
            "or merge it into a new cache instead)")
    return target


def _new_cache(url: str) -> Store:
    """The empty store a merge or convert creates its cache in; refuse anything committed there."""
    base, ref = split_ref(url)
    if ref is not None:
        raise OperationRefused(f"--output {url} carries a ref (@{ref}); give the new cache's URL")
    store = open_store(base)
    if list_generations(store):
        raise OperationRefused(f"{store.url} already holds a cache (generations "
                               f"{list_generations(store)}); this writes a new cache: choose an "
                               "empty --output")
    return store


def _rename_shards(table: pa.Table, names: dict[str, str]) -> pa.Table:
    column = [names.get(n, n) for n in table.column("shard").to_pylist()]
    return table.set_column(table.schema.get_field_index("shard"), "shard", pa.array(column, pa.string()))


class _Mover:
    """Brings shards of other caches into ``dst`` (``transfer.bring``) and remembers the copies,
    so a failure before the commit removes them instead of leaving orphans behind."""

    def __init__(self, dst: Store, taken: set[str]):
        self.dst, self.taken = dst, taken
        self.copies: list[ShardInfo] = []
        self.referenced = 0

    def bring_all(self, src: _Source) -> tuple[list[ShardInfo], pa.Table]:
        """src's shards as seen from dst (renamed where a name is taken) and its index rows."""
        shards, names = [], {}
        for shard in src.manifest.shards:
            name = shard.name
            if name in self.taken:
                name = f"{src.manifest.cache_id[:8]}-g{src.manifest.generation}-{shard.name}"
            self.taken.add(name)
            names[shard.name] = name
            moved = bring(src.store, shard, self.dst, name=name)
            if moved.root is None and moved.path != shard.path:
                self.copies.append(moved)
            else:
                self.referenced += 1
            shards.append(moved)
        return shards, _rename_shards(src.index, names)

    def discard(self) -> None:
        # Best effort, gc takes what is left; never delete what a manifest names (a commit
        # whose reply was lost, say).
        with contextlib.suppress(Exception):
            named = {s.path for g in list_generations(self.dst)
                     for s in read_manifest(self.dst, g).shards}
            for shard in self.copies:
                if shard.path not in named:
                    self.dst.delete(shard.path)


def _live(table: pa.Table) -> int:
    return sum(1 for s in table.column("status").to_pylist() if s == STATUS_OK)


def append(url: str, other: str) -> OpResult:
    """A new generation of ``url``: its shards plus those of ``other`` (same fingerprint).

    On the same store the shards are referenced where they lie (no bytes copied), so ``url``
    then depends on ``other``'s objects: deleting ``other``'s folder breaks ``url`` (``gc`` never
    does, since ``other``'s own manifests keep naming them). Across stores (another filesystem,
    bucket or endpoint) they are copied into ``url``'s shards/ and sha256-checked. ``other``'s
    index rows come along with their status (its tombstones stay tombstones); a sample id
    already in ``url`` refuses the whole append.
    """
    dst = _open_target(url)
    src = _open(other)
    if src.manifest.cache_id == dst.manifest.cache_id:
        raise OperationRefused(f"{other} is the same cache as {url}: appending it to itself "
                               "would duplicate every sample")
    check_compatible(dst.manifest, src.manifest.fingerprint, src.manifest.layout,
                     src.manifest.encoding, f"{dst.store.url} (appending {src.ref})")
    if src.manifest.num_samples == 0:
        raise OperationRefused(f"{src.ref} has no live samples; nothing to append")
    index = dst.index
    check_unique_ids(pa.concat_tables([index, src.index]), dst.store.url,
                     hint=f"they are already in {dst.store.url}; filter them out of the source first")
    mover = _Mover(dst.store, {s.name for s in dst.manifest.shards})
    with WriterLease(dst.store, what="append"):  # gc spares the copies until the commit
        try:
            shards, rows = mover.bring_all(src)
            manifest = commit_manifest(
                dst.store, parent=dst.manifest, shards=dst.manifest.shards + tuple(shards),
                index_table=pa.concat_tables([index, rows]), layout=dst.manifest.layout,
                fingerprint=dst.manifest.fingerprint, encoding=dst.manifest.encoding,
                operation="append", extra={"args": {"from": src.ref,
                                                    "copied_shards": len(mover.copies)}})
        except BaseException:
            mover.discard()
            raise
    return OpResult(manifest, added=_live(rows), copied_shards=len(mover.copies),
                    referenced_shards=mover.referenced)


def _commit_filter(src: _Source, remove: list[bool], args: dict[str, Any]) -> OpResult:
    index = src.index
    status = index.column("status").to_pylist()
    new_status = [STATUS_REMOVED if drop and st == STATUS_OK else st for st, drop in zip(status, remove)]
    removed = sum(a != b for a, b in zip(status, new_status))
    if removed == 0:
        return OpResult(None)
    if STATUS_OK not in new_status:
        raise OperationRefused(f"this filter would remove all {removed} live samples of {src.ref}; "
                               "refusing to commit an empty generation")
    table = index.set_column(index.schema.get_field_index("status"), "status",
                             pa.array(new_status, pa.string()))
    manifest = commit_manifest(
        src.store, parent=src.manifest, shards=src.manifest.shards, index_table=table,
        layout=src.manifest.layout, fingerprint=src.manifest.fingerprint,
        encoding=src.manifest.encoding, operation="filter",
        extra={"args": {**args, "from": src.ref, "removed": removed, "live": _live(table)}})
    return OpResult(manifest, removed=removed)


def read_id_list(path: str) -> list[str]:
    """Sample ids, one per line ('#' comments and blank lines ignored), from any fsspec URL."""
    try:
        with fsspec.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise OperationRefused(f"id list {path} does not exist") from None
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def filter_samples(url: str, *, exclude_ids: Iterable[str] | None = None, where: str | None = None,
                   ids_source: str | None = None) -> OpResult:
    """A filter generation: ``exclude_ids`` removed, or only samples where ``where`` holds kept.

    ``where`` is a safe expression over the index columns (see ``filter_expr``); ``ids_source``
    (e.g. the id file's path) is only recorded in the manifest. Refuses a filter that removes
    nothing or every live sample; unknown ids are returned in ``unknown_ids``.
    """
    if (exclude_ids is None) == (where is None):
        raise OperationRefused("give exactly one of --exclude-ids FILE or --where EXPR")
    src = _open_target(url)
    index = src.index
    if where is not None:
        keep = evaluate_where(where, index)
        result = _commit_filter(src, [not k for k in keep], {"filter": "where", "where": where})
        if result.manifest is None:
            raise OperationRefused(f"--where {where!r} keeps every live sample of {src.ref}; "
                                   "nothing to filter")
        return result
    ids = set(exclude_ids)
    if not ids:
        raise OperationRefused("the id list is empty; nothing to exclude")
    known = set(index.column("sample_id").to_pylist())
    unknown = tuple(sorted(ids - known))
    if not ids & known:
        raise OperationRefused(f"none of the {len(ids)} ids to exclude is in {src.ref} "
                               f"(e.g. {list(unknown)[:3]}); is it the right cache?")
    result = _commit_filter(src, [sid in ids for sid in index.column("sample_id").to_pylist()],
                            {"filter": "exclude_ids", "ids": len(ids), "unknown_ids": len(unknown),
                             **({"ids_source": ids_source} if ids_source else {}),
                             "ids_digest": sha256_bytes("\n".join(sorted(ids)).encode())[:16]})
    if result.manifest is None:
        raise OperationRefused(f"every listed id is already removed in {src.ref}; nothing to filter")
    result.unknown_ids = unknown
    return result


def dedup_key(prompt: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: the identity of a prompt for dedup."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", prompt).casefold()).strip()


def dedup(url: str) -> OpResult:
    """Tombstone later samples with the same (normalised prompt, seed); the first one in index
    order stays. Returns ``OpResult(None)`` (nothing committed) when there is no duplicate."""
    src = _open_target(url)
    index = src.index
    seen: set[tuple[str, int]] = set()
    remove = []
    for prompt, seed, status in zip(index.column("prompt").to_pylist(), index.column("seed").to_pylist(),
                                    index.column("status").to_pylist()):
        key = (dedup_key(prompt), seed)
        remove.append(status == STATUS_OK and key in seen)
        if status == STATUS_OK:
            seen.add(key)
    return _commit_filter(src, remove, {"filter": "dedup", "by": "NFKC casefolded prompt, seed"})


def merge(a: str, b: str, *, output: str) -> OpResult:
    """A new cache ``output`` whose first generation (operation "merge") holds both caches'
    samples, tombstones included. Shards on ``output``'s store are referenced (``output`` then
    depends on ``a``'s and ``b``'s objects), others copied and sha256-checked."""
    first, second = _open(a), _open(b)
    if first.manifest.cache_id == second.manifest.cache_id:
        raise OperationRefused(f"{a} and {b} are generations of the same cache; merging would "
                               "duplicate samples (use a generation as it is, or filter)")
    check_compatible(first.manifest, second.manifest.fingerprint, second.manifest.layout,
                     second.manifest.encoding, f"{first.ref} (merging {second.ref})")
    dst = _new_cache(output)
    check_unique_ids(pa.concat_tables([first.index, second.index]), dst.url,
                     hint="the caches overlap; filter the shared samples out of one of them first")
    mover = _Mover(dst, set())
    with WriterLease(dst, what="merge"):  # gc spares the copies until the commit
        try:
            shards_a, rows_a = mover.bring_all(first)
            shards_b, rows_b = mover.bring_all(second)
            rows = pa.concat_tables([rows_a, rows_b])
            manifest = commit_manifest(
                dst, parent=None, shards=tuple(shards_a + shards_b), index_table=rows,
                layout=first.manifest.layout, fingerprint=first.manifest.fingerprint,
                encoding=first.manifest.encoding, operation="merge",
                extra={"args": {"from": [first.ref, second.ref], "copied_shards": len(mover.copies)}})
        except BaseException:
            mover.discard()
            raise
    return OpResult(manifest, added=_live(rows), copied_shards=len(mover.copies),
                    referenced_shards=mover.referenced)
