"""``verify``: every manifest parses and checks out (paths inside the root, no shard twice), the
sample index matches the sha256 and size its manifest pins and agrees with the manifest, every
shard is present with its size; ``deep`` re-hashes every shard and compares every record, all
fields (tensors, text, ids), with its checksums and with its index row. Problems name shard and
sample."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from .checksum import check_record_checksums, sha256_bytes
from .encodings import get_encoding, object_path
from .errors import CacheError, IntegrityError, ManifestError, UnpinnedIndexWarning
from .fields import CHECKSUMS_KEY, FIELD_NAMES
from .index import read_index
from .manifest import ShardInfo, list_generations, manifest_rel, read_manifest, resolve_generation
from .reader import CacheReader, decode_shard
from .store import open_store, split_ref


@dataclass
class VerifyReport:
    url: str
    generation: int | None = None
    checked_shards: int = 0
    checked_samples: int = 0
    checked_fields: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "generation": self.generation, "ok": self.ok,
                "checked_shards": self.checked_shards, "checked_samples": self.checked_samples,
                "checked_fields": self.checked_fields, "problems": self.problems,
                "warnings": self.warnings}


def verify_cache(url: str, *, deep: bool = False) -> VerifyReport:
    report = VerifyReport(url=url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnpinnedIndexWarning)
        _verify(report, url, deep)
    report.warnings = sorted({str(w.message) for w in caught
                              if issubclass(w.category, UnpinnedIndexWarning)})
    return report


def _verify(report: VerifyReport, url: str, deep: bool) -> None:
    base, ref = split_ref(url)
    store = open_store(base)
    gens = list_generations(store)
    if not gens:
        report.problems.append(f"{store.url}: no committed generation")
        return
    for gen in gens:  # every manifest, so a flipped byte in an old one is caught too
        try:
            read_manifest(store, gen)
        except ManifestError as exc:
            report.problems.append(f"{manifest_rel(gen)}: {exc}")
    try:
        report.generation = resolve_generation(store, ref)
        reader = CacheReader(url)
        index = read_index(reader.store, reader.manifest)  # pinned digest, then the rows
    except CacheError as exc:
        if str(exc) not in " ".join(report.problems):
            report.problems.append(str(exc))
        return
    rows = {(shard, offset): (sid, prompt, seed) for sid, shard, offset, prompt, seed in zip(
        *(index.column(c).to_pylist() for c in ("sample_id", "shard", "offset", "prompt", "seed")))}
    for shard in reader.manifest.shards:
        report.checked_shards += 1
        try:
            _verify_shard(report, reader, shard, rows, deep)
        except CacheError as exc:  # e.g. a referenced root that is not a cache
            report.problems.append(f"shard {shard.path}: {exc}")


def _verify_shard(report: VerifyReport, reader: CacheReader, shard: ShardInfo,
                  rows: dict[tuple[str, int], tuple[str, str, int]], deep: bool) -> None:
    store = reader.store_for(shard)  # appended shards may live in another cache
    name = shard.path if shard.root is None else f"{shard.path} (in {store.url})"
    try:
        encoding = get_encoding(shard.encoding)
    except CacheError as exc:
        report.problems.append(f"shard {name}: {exc}")
        return
    try:
        objects = encoding.objects(store, shard.path)
    except FileNotFoundError:
        objects = {}
    if not objects:
        report.problems.append(f"shard {name}: missing" + (
            f"; this cache references it by append/merge and depends on {store.url}: "
            "restore that cache" if shard.root else ""))
        return
    size = sum(objects.values())
    if size != shard.bytes:
        report.problems.append(f"shard {name}: {size} bytes, manifest says {shard.bytes} "
                               "(truncated or rewritten)")
        return
    if not deep:
        return
    digest = encoding.shard_hash({key: sha256_bytes(store.read_bytes(object_path(shard.path, key)))
                                  for key in objects})
    if digest != shard.sha256:
        report.problems.append(f"shard {name}: sha256 mismatch (corrupt bytes)")
        # decode on: the record whose bytes changed fails its checksums and is named
    count = 0
    try:
        for record in decode_shard(store, shard, reader.layout, FIELD_NAMES):
            sid = record.get("sample_id")
            report.checked_fields += check_record_checksums(record, record.get(CHECKSUMS_KEY) or {},
                                                            shard.path)
            want = rows.get((shard.name, count))
            got = (sid, record.get("prompt"), record.get("seed"))
            if want != got:
                raise IntegrityError(f"shard {name}: record {count} is sample {sid} "
                                     f"(prompt {got[1]!r}, seed {got[2]}), the index says "
                                     f"{want!r}", shard=shard.path, sample_id=sid)
            count += 1
    except IntegrityError as exc:
        report.problems.append(str(exc))
        return
    except encoding.read_errors as exc:
        report.problems.append(f"shard {name} is unreadable ({type(exc).__name__}: {exc})")
        return
    if count != shard.samples:
        report.problems.append(f"shard {name}: {count} records, the manifest says {shard.samples}")
        return
    report.checked_samples += count
