"""Ray Train on a real multi-node cluster that loses a worker's node mid-training (issue 28).

Four raylets on 127.0.0.1 (``ray start``, tests/local_cluster.py): a head without CPUs (the
driver of ``ray job submit`` and the Ray Train controller run there) and three worker nodes of
one CPU each, so the two training workers land on two different nodes and the third is where a
replacement can go. ``s2dit train kd --workers 2 --max-failures 1`` runs on a tiny cache; after
a checkpoint, the node of one rank (its raylet and every process under it) is SIGKILLed. Ray
Train restarts the worker group once, both ranks resume from the newest checkpoint, and the
final checkpoint must hold the same bytes (model, EMA, optimiser) as an uninterrupted run of
the same seed on the same cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest
from cache_factory import make_cache
from local_cluster import LocalCluster, finish, wait_for

from student_train.checkpoint import latest_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

STEPS = 48


@pytest.fixture
def cluster():
    cluster = LocalCluster()
    try:
        cluster.start_head()
        for _ in range(3):
            cluster.add_node(cpus=1)
        yield cluster
    finally:
        cluster.stop()


def _train(cluster: LocalCluster, cache: str, out: Path):
    return cluster.submit(
        sys.executable, "-m", "pipeline.cli", "train", "kd", "--cache", cache, "--out", str(out),
        "--workers", "2", "--max-failures", "1", "--steps", str(STEPS), "--batch-size", "8",
        "--checkpoint-every", "2", "--quiet", "--set", "warmup_steps=2", "--set", "log_every=1",
        "--set", "model.dim=48", "--set", "model.heads=4")


def _latest_step(out: Path) -> int:
    latest = latest_checkpoint(str(out))
    return int(latest.rsplit("_", 1)[-1]) if latest else -1


def _train_workers(cluster: LocalCluster) -> dict[int, psutil.Process]:
    """node-manager port -> the Ray Train worker process on that node."""
    found = {}
    for port in cluster.nodes:
        workers = [p for p in cluster.node_processes(port)
                   if "RayTrainWorker" in " ".join(p.cmdline())]
        assert len(workers) <= 1, workers  # one CPU per node
        if workers:
            found[port] = workers[0]
    return found


def _rank_zero(workers: dict[int, psutil.Process], out: Path) -> psutil.Process:
    """Rank 0 alone writes: the worker holding ``metrics.jsonl`` open."""
    metrics = str(out / "metrics.jsonl")
    writers = [p for p in workers.values() if metrics in {f.path for f in p.open_files()}]
    assert len(writers) == 1, writers
    return writers[0]


@pytest.mark.parametrize("rank", [0, 1])
def test_training_survives_the_loss_of_a_workers_node_with_the_same_bytes(cluster, tmp_path, rank):
    cache = make_cache(tmp_path / "cache")
    out = tmp_path / "kd"
    job = _train(cluster, cache, out)
    wait_for("a mid-run checkpoint", lambda: _latest_step(out) >= 4, job, timeout=400)
    workers = _train_workers(cluster)
    assert len(workers) == 2  # the two ranks on two different nodes
    zero = _rank_zero(workers, out)
    victim = next(w for w in workers.values() if (w.pid == zero.pid) == (rank == 0))
    killed = cluster.kill_node(cluster.node_of(victim.pid))
    at_kill = _latest_step(out)
    assert 4 <= at_kill <= STEPS - 12, at_kill  # the kill landed mid-run
    assert killed >= 2  # the raylet and the worker at least
    # the newest checkpoint once the old group is gone (the survivor may still have saved one)
    psutil.wait_procs(list(workers.values()), timeout=120)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers.values())
    newest = latest_checkpoint(str(out))
    output = finish(job)

    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    resumed = [r for r in rows if r.get("event") == "resumed"]
    assert len(resumed) == 1, output[-3000:]  # one restart of the group
    assert resumed[0]["checkpoint"] == newest and resumed[0]["step"] >= at_kill
    assert [r["step"] for r in rows if "loss" in r][-1] == STEPS
    assert _latest_step(out) == STEPS
    # same seed, same bytes: an uninterrupted run on the same cluster
    reference = tmp_path / "reference"
    finish(_train(cluster, cache, reference))
    final = f"checkpoints/step_{STEPS:06d}"
    states = [json.loads((o / final / "state.json").read_text()) for o in (out, reference)]
    assert states[0]["tensors_sha256"] == states[1]["tensors_sha256"]
    assert (out / final / "model.safetensors").read_bytes() == \
        (reference / final / "model.safetensors").read_bytes()
    assert states[0]["loader"] == states[1]["loader"]
    print(f"rank {rank}'s node killed ({killed} processes) at checkpoint step {at_kill}; resumed "
          f"from step {resumed[0]['step']}; final tensors sha256 {states[0]['tensors_sha256'][:16]} "
          "in both runs")
