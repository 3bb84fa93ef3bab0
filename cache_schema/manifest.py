"""Manifests (DESIGN 3.3): immutable JSON per generation, committed create-only, last.

Layout of a cache folder::

    shards/<name>.<nonce>.tar | shards/<name>.<nonce>.zarr/   written first, hashed
    index/<generation>.<nonce>.parquet                        the sample index of a generation
    manifests/000003.json                                      committed last, create-only
    tags/<name>.json                                           movable names for generations

A manifest lists every shard visible in its generation (not a delta), so a reader needs one
manifest only; a shard no manifest names is an orphan for ``gc``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .checksum import sha256_bytes
from .errors import ManifestError, NoCache, SchemaVersionError, UnpinnedIndexWarning
from .fields import SCHEMA_VERSION, CacheLayout
from .fingerprint import canonical_json, fingerprint_digest
from .paths import INDEX_DIR, SHARD_DIR, check_relative_path, check_root, resolve_root
from .reachability import check_reachable
from .store import Store, open_store, split_ref

PRODUCER_VERSION = "s2dit-0.1.0"
MANIFEST_DIR = "manifests"
TAG_DIR = "tags"
# Schema 2 pins the sample index (sha256, bytes) and records referenced roots in the lineage.
# Schema 1 manifests are still read, with an UnpinnedIndexWarning (their index is unchecked).
PINNED_INDEX_SCHEMA = 2
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardInfo:
    name: str  # logical name, stable across retries of the same work unit
    path: str  # relative to the cache root
    encoding: str  # a registered encoding's name (cache_schema.encoding_names())
    bytes: int
    sha256: str  # the encoding's shard_hash: the object's sha256, or a group hash (Encoding)
    samples: int
    # The cache root ``path`` is relative to when the shard lives in another cache on the same
    # store (an append or merge by reference, no bytes copied): relative to this cache's URL
    # (``../src``, see ``paths``; absolute roots are refused); None: this cache.
    root: str | None = None
    # Index rows (sample_id, shard, offset, prompt, seed, status) of a freshly written shard,
    # carried to the committer; not part of the manifest (the Parquet index holds them).
    index: tuple | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        # ``root`` is omitted when None, so manifests without references keep their exact bytes.
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "index" and not (f.name == "root" and self.root is None)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardInfo:
        return cls(**data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    generation: int
    cache_id: str
    fingerprint: dict[str, Any]
    layout: CacheLayout
    encoding: str
    shards: tuple[ShardInfo, ...]
    index_path: str
    num_samples: int
    operation: str
    parent: int | None
    created_at: float = field(default_factory=time.time)
    producer_version: str = PRODUCER_VERSION
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    # The index object's sha256 and size: None only in schema-1 manifests (read with a warning).
    index_sha256: str | None = None
    index_bytes: int | None = None

    @property
    def roots(self) -> tuple[str, ...]:
        """Referenced cache roots (append/merge by reference), as the lineage records them."""
        return tuple(sorted({s.root for s in self.shards if s.root is not None}))

    @property
    def fingerprint_digest(self) -> str:
        return fingerprint_digest(self.fingerprint)

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def body(self) -> dict[str, Any]:
        body = {
            "schema_version": self.schema_version, "generation": self.generation,
            "cache_id": self.cache_id, "fingerprint": self.fingerprint,
            "fingerprint_digest": self.fingerprint_digest, "layout": self.layout.to_json(),
            "encoding": self.encoding, "shards": [s.to_json() for s in self.shards],
            "index_path": self.index_path, "num_samples": self.num_samples,
            "lineage": {"operation": self.operation, "parent": self.parent},
            "created_at": self.created_at, "producer_version": self.producer_version,
            "extra": self.extra,
        }
        if self.schema_version >= PINNED_INDEX_SCHEMA:  # schema-1 bodies keep their exact bytes
            body["index_sha256"], body["index_bytes"] = self.index_sha256, self.index_bytes
            body["lineage"]["roots"] = list(self.roots)
        return body

    def to_bytes(self) -> bytes:
        body = self.body()
        # A digest of the body inside the manifest catches a flipped byte anywhere in it.
        body["body_sha256"] = sha256_bytes(canonical_json(body).encode())
        return json.dumps(body, sort_keys=True, indent=1, ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> Manifest:
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"manifest {where} is not valid JSON ({exc}); it is corrupt: "
                                "run `s2dit cache verify` and restore it from a backup") from exc
        if not isinstance(body, dict):
            raise ManifestError(f"manifest {where} is not a JSON object; it is corrupt")
        version = body.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"manifest {where} has schema version {version!r} but this s2dit reads up to "
                f"{SCHEMA_VERSION}: upgrade s2dit to read this cache")
        stored = body.pop("body_sha256", None)
        try:
            digest = sha256_bytes(canonical_json(body).encode())
        except (TypeError, ValueError, RecursionError) as exc:
            raise ManifestError(f"manifest {where} holds values that are not canonical JSON "
                                f"({exc}); it is corrupt") from None
        if stored != digest:
            raise ManifestError(f"manifest {where} fails its body checksum: it was modified or "
                                "corrupted after commit")
        try:
            manifest = cls(
                generation=body["generation"], cache_id=body["cache_id"],
                fingerprint=body["fingerprint"], layout=CacheLayout.from_json(body["layout"]),
                encoding=body["encoding"],
                shards=tuple(ShardInfo.from_json(s) for s in body["shards"]),
                index_path=body["index_path"], num_samples=body["num_samples"],
                operation=body["lineage"]["operation"], parent=body["lineage"]["parent"],
                created_at=body["created_at"], producer_version=body["producer_version"],
                schema_version=version, extra=body.get("extra", {}),
                index_sha256=body.get("index_sha256"), index_bytes=body.get("index_bytes"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"manifest {where} is malformed: {type(exc).__name__}: {exc}"
                                ) from exc
        check_manifest(manifest, where, lineage_roots=body["lineage"].get("roots"))
        return manifest


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest(manifest: Manifest, where: str, *, lineage_roots: object = None) -> None:
    """Everything a reader will follow or trust, checked before anything is opened: paths stay
    inside the cache root or a referenced root the lineage records (``paths``), no shard is
    listed twice, the index is pinned (schema >= 2). Raises ManifestError naming what is wrong."""
    where = f"manifest {where}"
    if not isinstance(manifest.generation, int) or manifest.generation < 1:
        raise ManifestError(f"{where}: generation {manifest.generation!r} is not a positive integer")
    check_relative_path(manifest.index_path, top=INDEX_DIR, where=where, what="index_path")
    if not _is_count(manifest.num_samples):
        raise ManifestError(f"{where}: num_samples {manifest.num_samples!r} is not a count")
    pinned = manifest.schema_version >= PINNED_INDEX_SCHEMA
    if pinned and not (isinstance(manifest.index_sha256, str) and
                       _SHA256.match(manifest.index_sha256) and _is_count(manifest.index_bytes)):
        raise ManifestError(f"{where}: schema {manifest.schema_version} must pin its index "
                            "(index_sha256, index_bytes); the manifest is malformed")
    names: set[str] = set()
    places: set[tuple[str | None, str]] = set()
    for shard in manifest.shards:
        if not isinstance(shard.name, str) or not shard.name or set(shard.name) & set("/\\\0"):
            raise ManifestError(f"{where}: bad shard name {shard.name!r}")
        what = f"shard {shard.name} path"
        check_relative_path(shard.path, top=SHARD_DIR, where=where, what=what)
        if shard.root is not None:
            check_root(shard.root, where=f"{where} (shard {shard.name})")
        if shard.name in names:
            raise ManifestError(f"{where}: shard {shard.name} is listed twice; a generation names "
                                "each shard once (refusing to read it twice)")
        if (shard.root, shard.path) in places:
            raise ManifestError(f"{where}: shard path {shard.path} is listed twice (as "
                                f"{shard.name} too); refusing to read it twice")
        names.add(shard.name)
        places.add((shard.root, shard.path))
        if not (_is_count(shard.bytes) and _is_count(shard.samples)
                and isinstance(shard.sha256, str) and isinstance(shard.encoding, str)):
            raise ManifestError(f"{where}: shard {shard.name} has malformed bytes, samples, "
                                "sha256 or encoding")
    if pinned and (not isinstance(lineage_roots, list) or sorted(set(map(str, lineage_roots)))
                   != list(manifest.roots)):  # after the loop: every root is a checked str
        raise ManifestError(f"{where}: its shards reference cache roots {list(manifest.roots)} "
                            f"but its lineage records {lineage_roots!r}; refusing roots the "
                            "lineage does not record")
    if not pinned:
        warnings.warn(f"{where} (schema {manifest.schema_version}) does not pin its sample index: "
                      "the index is read unchecked; a new generation (e.g. `s2dit cache filter` or "
                      "`convert`) writes a pinned one", UnpinnedIndexWarning, stacklevel=3)


def manifest_rel(generation: int) -> str:
    return f"{MANIFEST_DIR}/{generation:06d}.json"


def list_generations(store: Store) -> list[int]:
    gens = []
    for rel in store.list(MANIFEST_DIR):
        stem = rel.rsplit("/", 1)[-1].removesuffix(".json")
        if stem.isdigit() and rel.endswith(".json"):
            gens.append(int(stem))
    return sorted(gens)


def require_generations(store: Store) -> list[int]:
    """The committed generations of ``store``; none is an error saying why: its endpoint or
    bucket (StoreError: a missing bucket lists as empty), nothing at the URL, or a cache whose
    job has not committed (NoCache)."""
    gens = list_generations(store)
    if gens:
        return gens
    check_location(store)
    if store.exists(MANIFEST_DIR) or store.exists(SHARD_DIR):
        raise NoCache(f"{store.url} holds no committed generation yet (no {MANIFEST_DIR}/*.json): "
                      "the job writing it has not committed; rerun that job to finish it")
    raise NoCache(f"no cache at {store.url} (no {MANIFEST_DIR}/): run `s2dit cache generate` to "
                  "make one, or check the path")


def check_location(store: Store) -> None:
    """Something is at ``store``'s URL: else a StoreError for an unreachable endpoint or a
    missing bucket, or NoCache for a path with nothing there."""
    check_reachable(store.url)
    if not store.exists(""):
        raise NoCache(f"no cache at {store.url} (nothing there): run `s2dit cache generate` to "
                      "make one, or check the path")


def read_manifest(store: Store, generation: int) -> Manifest:
    rel = manifest_rel(generation)
    try:
        data = store.read_bytes(rel)
    except FileNotFoundError:
        known = list_generations(store)
        raise ManifestError(f"generation {generation} does not exist in {store.url} "
                            f"(generations: {known or 'none'})") from None
    manifest = Manifest.from_bytes(data, where=store.url_of(rel))
    if manifest.generation != generation:
        raise ManifestError(f"{store.url_of(rel)} claims generation {manifest.generation}")
    return manifest


def referenced_store(cache: Store, root: str) -> Store:
    """The store of a cache ``cache``'s manifest references by ``root`` (append/merge by
    reference): it must resolve by the ``paths`` rules and, where it exists, hold committed
    manifests itself (a deleted one reads as missing shards, which the reader names)."""
    ref = open_store(resolve_root(cache.url, root))
    if not list_generations(ref) and ref.exists(""):
        raise ManifestError(f"cache {cache.url} references shards in {ref.url} (root {root!r}), "
                            "which holds no committed cache; restore that cache or re-create "
                            "this one")
    return ref


def resolve_generation(store: Store, ref: str | int | None) -> int:
    """A generation number from None (newest), an int, ``"3"`` or a tag name."""
    gens = require_generations(store)
    if ref is None:
        return gens[-1]
    if isinstance(ref, int) or str(ref).isdigit():
        gen = int(ref)
        if gen not in gens:
            raise ManifestError(f"generation {gen} is out of range for {store.url} "
                                f"(generations: {gens[0]}..{gens[-1]})")
        return gen
    tag_rel = f"{TAG_DIR}/{ref}.json"
    try:
        tag = json.loads(store.read_bytes(tag_rel))
    except FileNotFoundError:
        tags = [t.rsplit("/", 1)[-1].removesuffix(".json") for t in store.list(TAG_DIR)]
        raise ManifestError(f"unknown tag {ref!r} in {store.url} (tags: {tags or 'none'})") from None
    return int(tag["generation"])


def load_manifest(url: str) -> Manifest | None:
    """The manifest a ``url[@N|@tag]`` names; None for an empty cache without a ref."""
    base, ref = split_ref(url)
    store = open_store(base)
    if ref is None and not list_generations(store):
        return None
    return read_manifest(store, resolve_generation(store, ref))


def write_manifest(store: Store, manifest: Manifest) -> None:
    """Create-only: two writers cannot both take a generation (AlreadyExists for the loser)."""
    store.put_create_only(manifest_rel(manifest.generation), manifest.to_bytes())


def shard_union(parent: Manifest | None, new: Iterable[ShardInfo]) -> tuple[ShardInfo, ...]:
    """Parent's shards plus new ones; a logical shard name already committed is not re-added."""
    shards = list(parent.shards) if parent else []
    names = {s.name for s in shards}
    for shard in new:
        if shard.name not in names:
            shards.append(shard)
            names.add(shard.name)
    return tuple(shards)


__all__ = [
    "PINNED_INDEX_SCHEMA",
    "Manifest",
    "ShardInfo",
    "check_manifest",
    "list_generations",
    "load_manifest",
    "manifest_rel",
    "read_manifest",
    "referenced_store",
    "resolve_generation",
    "shard_union",
    "write_manifest",
]
