"""``verify``: every manifest parses and checks out, every shard is present with its size;
``deep`` re-hashes every shard and every tensor's checksum. Problems name shard and sample."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .checksum import sha256_bytes
from .encodings import get_encoding, object_path
from .errors import CacheError, IntegrityError, ManifestError
from .manifest import list_generations, manifest_rel, read_manifest, resolve_generation
from .reader import CacheReader
from .store import open_store, split_ref


@dataclass
class VerifyReport:
    url: str
    generation: int | None = None
    checked_shards: int = 0
    checked_samples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "generation": self.generation, "ok": self.ok,
                "checked_shards": self.checked_shards, "checked_samples": self.checked_samples,
                "problems": self.problems}


def verify_cache(url: str, *, deep: bool = False,
                 storage_options: dict[str, Any] | None = None) -> VerifyReport:
    base, ref = split_ref(url)
    store = open_store(base, storage_options)
    report = VerifyReport(url=url)
    gens = list_generations(store)
    if not gens:
        report.problems.append(f"{store.url}: no committed generation")
        return report
    for gen in gens:  # every manifest, so a flipped byte in an old one is caught too
        try:
            read_manifest(store, gen)
        except ManifestError as exc:
            report.problems.append(f"{manifest_rel(gen)}: {exc}")
    try:
        report.generation = resolve_generation(store, ref)
        reader = CacheReader(url, storage_options)
    except CacheError as exc:
        report.problems.append(str(exc))
        return report
    manifest = reader.manifest
    for shard in manifest.shards:
        report.checked_shards += 1
        store = reader.store_for(shard)  # appended shards may live in another cache
        name = shard.path if shard.root is None else f"{shard.path} (in {store.url})"
        try:
            codec = get_encoding(shard.encoding)
        except CacheError as exc:
            report.problems.append(f"shard {name}: {exc}")
            continue
        try:
            objects = codec.objects(store, shard.path)
        except FileNotFoundError:
            report.problems.append(f"shard {name}: missing" + (
                f"; this cache references it by append/merge and depends on {store.url}: "
                "restore that cache" if shard.root else ""))
            continue
        size = sum(objects.values())
        if size != shard.bytes:
            report.problems.append(f"shard {name}: {size} bytes, manifest says {shard.bytes} "
                                   "(truncated or rewritten)")
            continue
        if not deep:
            continue
        digest = codec.shard_hash({key: sha256_bytes(store.read_bytes(object_path(shard.path, key)))
                                   for key in objects})
        if digest != shard.sha256:
            report.problems.append(f"shard {name}: sha256 mismatch (corrupt bytes)")
            continue
        count = 0
        try:
            for _ in reader.read_shard(shard, verify=True):
                count += 1
        except IntegrityError as exc:
            report.problems.append(str(exc))
            continue
        report.checked_samples += count
    return report
