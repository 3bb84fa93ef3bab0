"""The cache job on a real multi-node Ray cluster that loses a worker node mid-job (issue 28).

Three raylets on 127.0.0.1 (``ray start``): a head without CPUs (the driver of ``ray job
submit`` runs there), a worker node on which both teacher actors are placed, and a second
worker node that joins once they are. The first worker node (its raylet and every process
under it) is SIGKILLed after the job's first commit; the pool replaces the dead actors on the
second node, the units they held are retried, and the cache must come out complete, verified,
with every sample once and the same shard bytes as an uninterrupted job."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from cache_schema import CacheReader, load_manifest
from cache_schema.verify import verify_cache

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

RAY = str(Path(sys.executable).parent / "ray")
# The GCS declares a silent node dead after period x threshold: seconds here, not ~30 s.
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
               "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}
PROMPTS = [f"a {c} {o} moving {m}" for o in ("square", "ring", "cross")
           for c in ("red", "green", "blue") for m in ("left", "right")]
SAMPLES = len(PROMPTS) * 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalCluster:
    """Raylets started with ``ray start`` under one temp dir; stopped by that dir, never with
    `ray stop` (which would kill every Ray process on the machine, other sessions' too)."""

    def __init__(self) -> None:
        self.temp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # unix socket paths stay short
        self.port, self.dash = _free_port(), _free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", **FAST_HEALTH}

    def _start(self, *args: str) -> None:
        subprocess.run([RAY, "start", "--node-ip-address", "127.0.0.1", f"--temp-dir={self.temp}",
                        "--dashboard-agent-listen-port", str(_free_port()), *args],
                       env=self.env, check=True, timeout=180, capture_output=True)

    def start_head(self) -> None:
        self._start("--head", "--port", str(self.port), "--num-cpus", "0", "--include-dashboard",
                    "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dash))

    def add_node(self, cpus: int) -> int:
        """A worker node; returns its node-manager port (what names its raylet process)."""
        port = _free_port()
        self._start("--address", f"127.0.0.1:{self.port}", "--num-cpus", str(cpus),
                    "--node-manager-port", str(port))
        return port

    def node_processes(self, port: int) -> list[psutil.Process]:
        """The raylet of one node and every process under it (agents, workers, actors)."""
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if self.temp in cmd and f"--node_manager_port={port}" in cmd:
                return [proc, *proc.children(recursive=True)]
        return []

    def kill_node(self, port: int) -> int:
        procs = self.node_processes(port)
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)
        return len(procs)

    def submit(self, config: Path, output: Path) -> subprocess.Popen:
        cmd = [RAY, "job", "submit", "--address", f"http://127.0.0.1:{self.dash}", "--",
               sys.executable, "-m", "teacher_jobs", "generate", "--config", str(config),
               "--output", str(output), "--ray-address", "auto"]
        return subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def stop(self) -> None:
        victims = set()
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if self.temp in " ".join(proc.info["cmdline"] or []):
                    victims |= {proc, *proc.children(recursive=True)}
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        for proc in victims:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(victims), timeout=30)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def cluster():
    cluster = LocalCluster()
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.stop()


def _wait(what: str, done, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise AssertionError(f"the job ended before {what}: {proc.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def test_the_cache_job_survives_the_loss_of_the_node_its_actors_run_on(cluster, tmp_path):
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("\n".join(PROMPTS) + "\n")
    config = tmp_path / "job.toml"  # 24 units of 3 samples; many modes: a few seconds a unit
    config.write_text(f"[job]\nprompts = '{corpus}'\nsamples_per_shard = 3\nseeds_per_prompt = 4\n"
                      "num_actors = 2\ncommit_every = 2\nplacement_timeout_s = 120\n"
                      "[job.teacher]\nkind = 'analytic'\nmodes_per_class = 48\n")
    output = tmp_path / "cache"
    victim = cluster.add_node(cpus=2)  # the only node with CPUs: both actors land here
    job = cluster.submit(config, output)
    _wait("the first shard", lambda: any((output / "shards").glob("*")), job)
    assert len([p for p in cluster.node_processes(victim) if "TeacherWorker" in " ".join(
        p.cmdline())]) == 2  # both teacher actors run on the victim node
    cluster.add_node(cpus=2)  # where the replacements can go
    _wait("the first commit", lambda: (output / "manifests" / "000001.json").exists(), job)
    committed_before = load_manifest(str(output)).num_samples
    assert committed_before < SAMPLES  # the kill lands mid-job
    killed = cluster.kill_node(victim)
    assert killed >= 3  # raylet, its agents and the two actors
    _finish(job)

    report = json.loads(sorted((output / "reports").glob("*.json"))[-1].read_text())
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
    _finish(cluster.submit(config, reference))
    assert {s.name: s.sha256 for s in load_manifest(str(reference)).shards} == {
        s.name: s.sha256 for s in manifest.shards}
