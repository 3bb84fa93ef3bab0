"""The cache job on a real multi-node Ray cluster that loses a worker node mid-job (issue 28).

Three raylets on 127.0.0.1 (``ray start``): a head without CPUs (the driver of ``ray job
submit`` runs there), a worker node on which both teacher actors are placed, and a second
worker node that joins once they are. The first worker node (its raylet and every process
under it) is SIGKILLed after the job's first commit; the pool replaces the dead actors on the
second node, the units they held are retried, and the cache must come out complete, verified,
with every sample once and the same shard bytes as an uninterrupted job."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from local_cluster import LocalCluster, finish, wait_for

from cache_schema import CacheReader, load_manifest
from cache_schema.verify import verify_cache

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PROMPTS = [f"a {c} {o} moving {m}" for o in ("square", "ring", "cross")
           for c in ("red", "green", "blue") for m in ("left", "right")]
SAMPLES = len(PROMPTS) * 4


@pytest.fixture
def cluster():
    cluster = LocalCluster()
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.stop()


def _submit(cluster: LocalCluster, config: Path, output: Path):
    return cluster.submit(sys.executable, "-m", "teacher_jobs", "generate", "--config", str(config),
                          "--output", str(output), "--ray-address", "auto")


def test_the_cache_job_survives_the_loss_of_the_node_its_actors_run_on(cluster, tmp_path):
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("\n".join(PROMPTS) + "\n")
    config = tmp_path / "job.toml"  # 24 units of 3 samples; many modes: a few seconds a unit
    config.write_text(f"[job]\nprompts = '{corpus}'\nsamples_per_shard = 3\nseeds_per_prompt = 4\n"
                      "num_actors = 2\ncommit_every = 2\nplacement_timeout_s = 120\n"
                      "[job.teacher]\nkind = 'analytic'\nmodes_per_class = 48\n")
    output = tmp_path / "cache"
    victim = cluster.add_node(cpus=2)  # the only node with CPUs: both actors land here
    job = _submit(cluster, config, output)
    wait_for("the first shard", lambda: any((output / "shards").glob("*")), job)
    assert len([p for p in cluster.node_processes(victim) if "TeacherWorker" in " ".join(
        p.cmdline())]) == 2  # both teacher actors run on the victim node
    cluster.add_node(cpus=2)  # where the replacements can go
    wait_for("the first commit", lambda: (output / "manifests" / "000001.json").exists(), job)
    committed_before = load_manifest(str(output)).num_samples
    assert committed_before < SAMPLES  # the kill lands mid-job
    killed = cluster.kill_node(victim)
    assert killed >= 3  # raylet, its agents and the two actors
    finish(job)

    # the job's report, not the monitor's reports/status.json (kept current while it runs)
    reports = sorted(p for p in (output / "reports").glob("*.json") if p.name != "status.json")
    report = json.loads(reports[-1].read_text())
    deaths = [e for e in report["actor_events"] if "died" in e]
    assert len(deaths) == 2, report["actor_events"]  # both actors died once and were replaced
    check = verify_cache(str(output), deep=True)
    assert check.ok, check
    manifest = load_manifest(str(output))
    names = [s.name for s in manifest.shards]
    assert len(names) == len(set(names)) == SAMPLES // 3  # every unit committed exactly once
    ids = [r["sample_id"] for r in CacheReader(str(output)).iter_records(fields=["seed"])]
    assert len(ids) == len(set(ids)) == SAMPLES  # no sample lost, none twice

    # the same bytes as a job no node was lost under (the replacements ran on the other node)
    reference = tmp_path / "reference"
    finish(_submit(cluster, config, reference))
    assert {s.name: s.sha256 for s in load_manifest(str(reference)).shards} == {
        s.name: s.sha256 for s in manifest.shards}
