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
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .checksum import sha256_bytes
from .errors import ManifestError, SchemaVersionError
from .fields import SCHEMA_VERSION, CacheLayout
from .fingerprint import canonical_json, fingerprint_digest
from .store import Store, open_store, split_ref

PRODUCER_VERSION = "s2dit-0.1.0"
MANIFEST_DIR = "manifests"
TAG_DIR = "tags"


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
    # (``../src``) or, in manifests written before relative roots, absolute; None: this cache.
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

    @property
    def fingerprint_digest(self) -> str:
        return fingerprint_digest(self.fingerprint)

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def body(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "generation": self.generation,
            "cache_id": self.cache_id, "fingerprint": self.fingerprint,
            "fingerprint_digest": self.fingerprint_digest, "layout": self.layout.to_json(),
            "encoding": self.encoding, "shards": [s.to_json() for s in self.shards],
            "index_path": self.index_path, "num_samples": self.num_samples,
            "lineage": {"operation": self.operation, "parent": self.parent},
            "created_at": self.created_at, "producer_version": self.producer_version,
            "extra": self.extra,
        }

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
        version = body.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"manifest {where} has schema version {version!r} but this s2dit reads up to "
                f"{SCHEMA_VERSION}: upgrade s2dit to read this cache")
        stored = body.pop("body_sha256", None)
        if stored != sha256_bytes(canonical_json(body).encode()):
            raise ManifestError(f"manifest {where} fails its body checksum: it was modified or "
                                "corrupted after commit")
        try:
            return cls(
                generation=body["generation"], cache_id=body["cache_id"],
                fingerprint=body["fingerprint"], layout=CacheLayout.from_json(body["layout"]),
                encoding=body["encoding"],
                shards=tuple(ShardInfo.from_json(s) for s in body["shards"]),
                index_path=body["index_path"], num_samples=body["num_samples"],
                operation=body["lineage"]["operation"], parent=body["lineage"]["parent"],
                created_at=body["created_at"], producer_version=body["producer_version"],
                schema_version=version, extra=body.get("extra", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest {where} is malformed: {exc}") from exc


def manifest_rel(generation: int) -> str:
    return f"{MANIFEST_DIR}/{generation:06d}.json"


def list_generations(store: Store) -> list[int]:
    gens = []
    for rel in store.list(MANIFEST_DIR):
        stem = rel.rsplit("/", 1)[-1].removesuffix(".json")
        if stem.isdigit() and rel.endswith(".json"):
            gens.append(int(stem))
    return sorted(gens)


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


def resolve_generation(store: Store, ref: str | int | None) -> int:
    """A generation number from None (newest), an int, ``"3"`` or a tag name."""
    gens = list_generations(store)
    if not gens:
        raise ManifestError(f"{store.url} holds no committed generation (no {MANIFEST_DIR}/*.json); "
                            "is the URL right, and did the writing job commit?")
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


def load_manifest(url: str, storage_options: dict[str, Any] | None = None) -> Manifest | None:
    """The manifest a ``url[@N|@tag]`` names; None for an empty cache without a ref."""
    base, ref = split_ref(url)
    store = open_store(base, storage_options)
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
    "Manifest",
    "ShardInfo",
    "list_generations",
    "load_manifest",
    "manifest_rel",
    "read_manifest",
    "resolve_generation",
    "shard_union",
    "write_manifest",
]
