"""The Ray cache job holds a writer lease (issue 28): `s2dit cache gc --grace 1s` run before
each of its commits, while its actors' shards are written but not yet named, deletes none of
them, and every commit names only shards that exist."""

from __future__ import annotations

import time

import pytest

from cache_schema import CacheReader, open_store
from cache_schema.lease import LEASE_DIR
from cache_schema.verify import verify_cache
from pipeline.cli import main as cli
from teacher_jobs import job
from teacher_jobs.config import JobConfig
from teacher_jobs.teachers import make_settings

PROMPTS = [f"a {c} ring moving {m}" for c in ("red", "green", "blue") for m in ("left", "right")]


@pytest.mark.slow  # a real Ray job with gc before each commit (~40 s); tests/cache_schema/test_gc_leases.py covers the rule in process
def test_gc_before_every_commit_of_a_running_job_deletes_nothing(tmp_path, ray_runtime,
                                                                  monkeypatch, capsys):
    corpus, output = tmp_path / "prompts.txt", str(tmp_path / "cache")
    corpus.write_text("\n".join(PROMPTS) + "\n")
    commit, runs = job.commit_generation, []

    def gc_then_commit(url, *, shards, **kw):
        time.sleep(1.1)  # the uncommitted shards are now older than the grace
        assert cli(["cache", "gc", url, "--grace", "1s", "--allow-short-grace"]) == 0
        runs.append(capsys.readouterr().out)
        return commit(url, shards=shards, **kw)

    monkeypatch.setattr(job, "commit_generation", gc_then_commit)
    config = JobConfig(teacher=make_settings({"kind": "analytic", "steps": 4}), prompts=str(corpus),
                       output=output, samples_per_shard=2, seeds_per_prompt=2, num_actors=2,
                       commit_every=2, keep_steps="all")
    result = job.run_generation(config, progress=False)
    assert result.ok and len(runs) >= 2
    assert any(" 0 kept for" not in r for r in runs)  # gc did see in-flight shards
    assert all(r.rstrip().endswith("0 deleted") for r in runs), runs
    assert verify_cache(output, deep=True).ok
    assert len(list(CacheReader(output).iter_records(fields=["seed"]))) == 2 * len(PROMPTS)
    assert not open_store(output).list(LEASE_DIR)
