"""Orphan adoption on resume (issue 27): shards a killed driver wrote but never committed are
adopted after a deep verify (receipt sha256, per-record checksums, sample ids of the job's
units) instead of regenerated; a corrupt orphan is regenerated."""

from __future__ import annotations

import pytest

from cache_schema import CacheReader, load_manifest, open_store
from cache_schema.adopt import RECEIPT_SUFFIX
from cache_schema.verify import verify_cache
from teacher_jobs import job
from teacher_jobs.config import JobConfig
from teacher_jobs.teachers import make_settings

PROMPTS = [f"a {c} ring moving {m}" for c in ("red", "green") for m in ("left", "right")]


class DriverDied(Exception):
    pass


def _orphans(tmp_path, monkeypatch) -> JobConfig:
    """A run whose every shard is written and whose driver dies before the first commit."""
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("\n".join(PROMPTS) + "\n")
    config = JobConfig(teacher=make_settings({"kind": "analytic", "steps": 4}), prompts=str(corpus),
                       output=str(tmp_path / "cache"), samples_per_shard=2, seeds_per_prompt=2,
                       num_actors=1, commit_every=100, keep_steps="all")

    def die(*_, **__):
        raise DriverDied

    with monkeypatch.context() as m:
        m.setattr(job, "commit_generation", die)
        with pytest.raises(DriverDied):
            job.run_generation(config, progress=False)
    assert load_manifest(config.output) is None
    return config


def _receipts(output: str) -> list[str]:
    return [r for r in open_store(output).list("shards") if r.endswith(RECEIPT_SUFFIX)]


def test_verified_orphans_are_adopted_on_resume_and_none_is_regenerated(tmp_path, ray_runtime,
                                                                        monkeypatch):
    config = _orphans(tmp_path, monkeypatch)
    assert len(_receipts(config.output)) == 4
    result = job.run_generation(config, progress=False)
    assert result.ok and len(result.report["units_adopted"]) == 4
    assert result.report["unit_plan"]["samples_per_shard"] == 2  # as configured (a CPU job)
    assert result.report["actors_started"] == 0  # no teacher ran: nothing was regenerated
    assert all(t.get("adopted") for t in result.report["telemetry"])
    assert verify_cache(config.output, deep=True).ok
    assert len(list(CacheReader(config.output).iter_records(fields=["seed"]))) == 2 * len(PROMPTS)
    assert not _receipts(config.output)  # committed: receipts dropped


def test_a_corrupt_orphan_is_regenerated_and_the_others_adopted(tmp_path, ray_runtime, monkeypatch):
    config = _orphans(tmp_path, monkeypatch)
    store = open_store(config.output)
    victim = min(_receipts(config.output)).removesuffix(RECEIPT_SUFFIX)
    data = bytearray(store.read_bytes(victim))
    data[len(data) // 2] ^= 0xFF  # one flipped byte mid-shard
    (tmp_path / "cache" / victim).write_bytes(bytes(data))
    result = job.run_generation(config, progress=False)
    assert result.ok and len(result.report["units_adopted"]) == 3
    assert list(result.report["orphans_not_adopted"]) == [victim]
    fresh = [t for t in result.report["telemetry"] if not t.get("adopted")]
    assert len(fresh) == 1 and fresh[0]["unit"] == victim.split("/")[-1].split(".")[0]
    manifest = load_manifest(config.output)
    assert victim not in {s.path for s in manifest.shards}
    assert verify_cache(config.output, deep=True).ok
    ids = [r["sample_id"] for r in CacheReader(config.output).iter_records(fields=["sample_id"])]
    assert len(ids) == len(set(ids)) == 2 * len(PROMPTS)
