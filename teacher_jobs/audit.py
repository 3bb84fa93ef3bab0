"""`cache audit`: regenerate a sample of a cache's records with its fingerprinted teacher and
the counter-based noise, and compare them with the cached bytes (issue 17).

Checksums prove the bytes are the ones the writer wrote; only regeneration proves they are
what the teacher computes. The teacher is built from the job config the manifest records (the
resolved config `s2dit cache generate` commits with every generation), flags over it, or from
the job settings given (``config``: a cache that records none), and must have the manifest's
fingerprint exactly, so the same code, weights, seed and settings; each sampled record is then recorded again from its prompt,
negative prompt and seed (noise = f(global seed, sample id)) and compared field by field:
bit-exact on a CPU (deterministic kernels), within ``atol`` on a GPU (kernels differ between
GPU models and runs), where ``atol`` is stated in the audit. The audit is written as JSON under
``audits/`` beside ``manifests/`` (create-only), never as a new generation.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import groupby
from typing import Any

import numpy as np

from cache_schema import (
    CacheReader,
    FingerprintMismatch,
    OperationRefused,
    canonical_json,
    diff_fingerprints,
    fingerprint_digest,
)
from cache_schema.index import STATUS_OK
from cache_schema.manifest import Manifest

from .config import JobConfig
from .sampler import cache_fingerprint, record_trajectories

AUDIT_DIR = "audits"
GPU_ATOL = 2e-2  # half-precision velocities of two GPU runs differ by a few ulp at |v| ~ 1


@dataclass
class Mismatch:
    sample_id: str
    shard: str
    fields: dict[str, str]  # field -> how it differs


@dataclass
class AuditResult:
    url: str
    generation: int
    teacher_fingerprint: str  # digest of the manifest's (and the rebuilt teacher's) fingerprint
    device: str
    atol: float  # 0.0: bit-exact required
    sample_ids: list[str] = field(default_factory=list)
    exact: int = 0
    within_tolerance: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # chosen ids the regeneration did not yield
    record_path: str = ""

    @property
    def checked(self) -> int:
        return len(self.sample_ids)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.missing

    @property
    def exact_fraction(self) -> float:
        return self.exact / self.checked if self.checked else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(checked=self.checked, ok=self.ok, exact_fraction=self.exact_fraction,
                   result="pass" if self.ok else "fail")
        return out


def choose_ids(live: Sequence[str], *, fraction: float | None, ids: Sequence[str] | None,
               seed: int) -> list[str]:
    """The sample ids to audit: the given ones (each must be live in the cache), or a seeded
    ``fraction`` of the live ones (at least one)."""
    if (fraction is None) == (ids is None):
        raise OperationRefused("give exactly one of --fraction F or --ids FILE")
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        unknown = sorted(set(wanted) - set(live))
        if unknown:
            raise OperationRefused(f"{len(unknown)} ids to audit are not live samples of this "
                                   f"generation (e.g. {unknown[:3]}); is it the right cache?")
        if not wanted:
            raise OperationRefused("the id list is empty; nothing to audit")
        return wanted
    if not 0 < fraction <= 1:
        raise OperationRefused(f"--fraction must be in (0, 1], got {fraction}")
    count = max(1, round(fraction * len(live)))
    picked = np.random.default_rng(seed).choice(len(live), size=count, replace=False)
    return [live[i] for i in sorted(picked)]


def compare_records(cached: dict[str, Any], fresh: dict[str, Any], atol: float
                    ) -> tuple[dict[str, str], bool]:
    """{field: difference} of two records, and whether every tensor was bit-exact."""
    differences: dict[str, str] = {}
    exact = True
    for name in sorted(set(cached) | set(fresh)):
        if name == "checksums":
            continue
        a, b = cached.get(name), fresh.get(name)
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            if a.shape != b.shape or a.dtype != b.dtype:
                differences[name] = f"shape/dtype {a.shape} {a.dtype} != {b.shape} {b.dtype}"
                continue
            if np.array_equal(a.view(np.uint8), b.view(np.uint8)):
                continue
            exact = False
            worst = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) \
                if a.size else 0.0
            if not worst <= atol:  # NaN-safe
                differences[name] = f"max |cached - regenerated| = {worst:.3g} (atol {atol})"
        elif a != b:
            differences[name] = f"{a!r} != {b!r}"
    return differences, exact


def recorded_config(manifest: Manifest, *, teacher: dict[str, Any] | None = None,
                    **overrides: Any) -> JobConfig | None:
    """The job config ``manifest`` records (``extra.config``: `s2dit cache generate` writes the
    resolved one), with ``teacher`` section and job ``overrides`` over it (None values: not
    given); None when it records none (a cache written by another tool)."""
    data = (manifest.extra or {}).get("config")
    if not isinstance(data, dict):
        return None
    known = {f.name for f in dataclasses.fields(JobConfig)}
    data = {k: v for k, v in data.items() if k in known}  # keys another version recorded
    return JobConfig.from_table(data, teacher=teacher,
                                where=f"the job config recorded in generation "
                                      f"{manifest.generation}", **overrides)


def _teacher_for(config: JobConfig, manifest_fingerprint: dict[str, Any], *,
                 recorded: bool = False):
    plan = config.teacher.driver_plan(config.video)
    fingerprint = cache_fingerprint(plan.fingerprint, keep_steps=config.keep_step_indices,
                                    global_seed=config.seed, half_dtype=config.half_dtype,
                                    negative_prompt=config.negative_prompt)
    if canonical_json(fingerprint) != canonical_json(manifest_fingerprint):
        diff = "\n  ".join(diff_fingerprints(manifest_fingerprint, fingerprint))
        if recorded:
            raise FingerprintMismatch("the flags given change the teacher this cache was made "
                                      "with (its recorded job config): audit without them, or "
                                      "only with ones that keep its fingerprint (--device). "
                                      f"Differences (cache -> given):\n  {diff}")
        raise FingerprintMismatch("the teacher and settings given are not the ones this cache "
                                  "was made with; pass the job's config (--config) or flags. "
                                  f"Differences (cache -> given):\n  {diff}")
    teacher = config.teacher.build(config.video, device=config.device)
    config.teacher.check_loaded(teacher, fingerprint)
    return teacher


def audit_cache(url: str, config: JobConfig | None = None, *, fraction: float | None = None,
                ids: Sequence[str] | None = None, seed: int = 0, atol: float | None = None,
                settings: dict[str, Any] | None = None, write: bool = True,
                progress: Any = None) -> AuditResult:
    """Audit ``url[@ref]`` (module docstring) with the job's ``config``, or (None) the one its
    manifest records with ``settings`` over it (``JobConfig.load`` keywords: ``teacher`` and job
    keys; a cache that records none: ``settings`` alone); ``progress(n)`` is called with 0 once
    the teacher, its fingerprint and the ids are checked, then per regenerated record."""
    reader = CacheReader(url)
    manifest = reader.manifest
    config, recorded = _audit_config(manifest, config, settings)
    teacher = _teacher_for(config, manifest.fingerprint, recorded=recorded)
    rows = [r for r in reader.index().to_pylist() if r["status"] == STATUS_OK]
    chosen = choose_ids([r["sample_id"] for r in rows], fraction=fraction, ids=ids, seed=seed)
    wanted = set(chosen)
    on_gpu = not config.device.startswith("cpu")
    result = AuditResult(url=url, generation=manifest.generation,
                         teacher_fingerprint=fingerprint_digest(manifest.fingerprint),
                         device=config.device,
                         atol=(GPU_ATOL if on_gpu else 0.0) if atol is None else atol,
                         sample_ids=chosen)
    if progress is not None:  # the inputs are checked: regeneration starts (a bar may show)
        progress(0)
    shards = {s.name: s for s in manifest.shards}
    seen: set[str] = set()
    for shard_name in sorted({r["shard"] for r in rows if r["sample_id"] in wanted}):
        shard = shards[shard_name]
        cached = [r for r in reader.read_shard(shard) if r["sample_id"] in wanted]
        cached.sort(key=lambda r: r["negative_prompt"])
        # one regeneration per negative prompt: record_trajectories takes one per call
        for negative, group in groupby(cached, key=lambda r: r["negative_prompt"]):
            seen |= _audit_group(teacher, config, manifest, shard.path, negative, list(group),
                                 result, progress)
    result.missing = sorted(wanted - seen)
    if write:
        result.record_path = _write_audit(reader, result, teacher_fingerprint=manifest.fingerprint)
    return result


def _audit_config(manifest: Manifest, config: JobConfig | None,
                  settings: dict[str, Any] | None) -> tuple[JobConfig, bool]:
    """The job config to audit with, and whether it is the one the manifest records."""
    if config is not None:
        return config, False
    recorded = recorded_config(manifest, **(settings or {}))
    return recorded or JobConfig.load(None, **(settings or {})), recorded is not None


def _audit_group(teacher: Any, config: JobConfig, manifest: Manifest, shard_path: str,
                 negative: str, group: list[dict[str, Any]], result: AuditResult,
                 progress: Any) -> set[str]:
    """Regenerate the cached records ``group`` (one shard, one negative prompt), tally each in
    ``result``; the ids looked at."""
    fresh, rejected = record_trajectories(
        teacher, [r["prompt"] for r in group], [r["seed"] for r in group],
        global_seed=config.seed, keep_steps=config.keep_step_indices,
        negative_prompt=negative, half_dtype=config.half_dtype,
        fingerprint_digest=manifest.fingerprint_digest,
        micro_batch=config.teacher.micro_batch)
    by_id = {r["sample_id"]: r for r in fresh}
    for record in group:
        sid = record["sample_id"]
        again = by_id.get(sid)
        if again is None:
            reason = "; ".join(r.reason for r in rejected) or "a different sample id"
            result.mismatches.append(Mismatch(sid, shard_path, {"sample_id": reason}))
            continue
        _tally(result, shard_path, record, again)
        if progress is not None:
            progress(1)
    return {r["sample_id"] for r in group}


def _tally(result: AuditResult, shard_path: str, cached: dict[str, Any],
           fresh: dict[str, Any]) -> None:
    """Count one regenerated record as exact, within tolerance or a mismatch."""
    differences, exact = compare_records(cached, fresh, result.atol)
    if differences:
        result.mismatches.append(Mismatch(cached["sample_id"], shard_path, differences))
    elif exact:
        result.exact += 1
    else:
        result.within_tolerance += 1


def _write_audit(reader: CacheReader, result: AuditResult, *, teacher_fingerprint: dict) -> str:
    """``audits/<generation>.<time>.<nonce>.json``, create-only: a record, not a generation."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rel = f"{AUDIT_DIR}/{result.generation:06d}.{stamp}.{uuid.uuid4().hex[:8]}.json"
    body = {**result.to_json(), "fingerprint": teacher_fingerprint, "audited_at": time.time()}
    body.pop("record_path", None)
    reader.store.put_create_only(rel, json.dumps(body, indent=1, sort_keys=True).encode())
    return reader.store.url_of(rel)


__all__ = ["AUDIT_DIR", "GPU_ATOL", "AuditResult", "Mismatch", "audit_cache", "choose_ids",
           "compare_records", "recorded_config"]
