"""The Ray cache-generation job: end to end, resume after SIGKILL, bad lines, cluster submit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_cluster import kill_processes_under

from cache_schema import (
    CacheReader,
    FingerprintMismatch,
    list_generations,
    load_manifest,
    open_store,
)
from cache_schema.verify import verify_cache
from teacher_jobs.config import JobConfig
from teacher_jobs.job import run_generation
from teacher_jobs.teachers import make_settings

CLASSES = [f"a {c} {o} moving {m}" for o in ("square", "ring", "cross")
           for c in ("red", "green", "blue") for m in ("left", "right")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "prompts.txt"
    path.write_bytes(("\n".join(CLASSES) + "\n").encode() + b"\xff\xfe broken\n\n   \nbell\x07\n"
                     + ("too many words " * 10).encode() + b"\n" + CLASSES[0].encode() + b"\n")
    return str(path)


def _config(corpus, output, shift=3.0, **kw) -> JobConfig:
    base = {"teacher": make_settings({"kind": "analytic", "steps": 4, "shift": shift}),
                "prompts": corpus, "output": output, "samples_per_shard": 4, "seeds_per_prompt": 2,
                "num_actors": 2, "commit_every": 3, "keep_steps": "all"}
    return JobConfig(**{**base, **kw})


def _shard_hashes(url) -> dict[str, str]:
    return {s.name: s.sha256 for s in load_manifest(url).shards}


SMALL_UNITS = {"samples_per_shard": 2, "commit_every": 1}  # 18 units, a generation after each


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory, ray_runtime) -> str:
    """One uninterrupted job (units of 2 samples, a commit after each), read-only: the bytes the
    killed, rerun and submitted jobs must reproduce (shard bytes depend on the units, not on the
    commit cadence or the number of actors)."""
    output = str(tmp_path_factory.mktemp("reference") / "cache")
    assert run_generation(_config(corpus, output, **SMALL_UNITS), progress=False).ok
    return output


# s3 x zarr took 41 s of the suite (many small objects over HTTP): slow. Zarr on S3 stays in the
# default suite through the integrity, gc-lease and versioning tests; the job on S3 through wds.
@pytest.mark.parametrize(("where", "encoding"), [
    ("local", "wds"), ("local", "zarr"), ("s3", "wds"), pytest.param("s3", "zarr", marks=pytest.mark.slow)])
def test_generation_end_to_end(encoding, where, corpus, tmp_path, ray_runtime, request):
    output = str(tmp_path / "cache") if where == "local" else request.getfixturevalue("s3_bucket") + "/c"
    result = run_generation(_config(corpus, output, encoding=encoding), progress=False)
    assert result.ok
    assert verify_cache(output, deep=True).ok
    records = list(CacheReader(output).iter_records(fields=["prompt", "seed"]))
    pairs = sorted((r["prompt"], r["seed"]) for r in records)
    assert pairs == sorted((p, s) for p in CLASSES for s in (0, 1))  # each exactly once
    bad = {r["line"]: r["reason"] for r in result.report["corpus_rejections"]}
    assert set(bad) == {19, 22, 23}, bad  # invalid UTF-8, control char, too long
    assert "UTF-8" in bad[19] and "control" in bad[22] and "limit" in bad[23]
    manifest = load_manifest(output)
    assert manifest.extra["config"]["encoding"] == encoding
    assert len(list_generations(open_store(output))) > 1  # intermediate generations were committed


def test_rerun_skips_committed_units_and_refuses_a_new_fingerprint(corpus, reference, tmp_path,
                                                                   ray_runtime):
    output = str(tmp_path / "cache")
    shutil.copytree(reference, output)  # a finished job's output
    first = load_manifest(output)
    again = run_generation(_config(corpus, output, **SMALL_UNITS), progress=False)
    assert again.report["units_skipped"] == again.report["units_total"] == 18
    assert again.report["actors_started"] == 0  # nothing left to do: no actor
    assert _shard_hashes(output) == {s.name: s.sha256 for s in first.shards}
    with pytest.raises(FingerprintMismatch, match="config.shift: 3.0 -> 5.0"):
        run_generation(_config(corpus, output, shift=5.0, **SMALL_UNITS), progress=False)


def _launch(corpus, output) -> subprocess.Popen:
    args = [sys.executable, "-m", "teacher_jobs", "generate", "--prompts", corpus, "--output", output,
            "--samples-per-shard", "2", "--steps", "4", "--seeds-per-prompt", "2", "--num-actors", "2",
            "--commit-every", "1"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_for_generation(output, at_least, proc, timeout=90.0) -> None:
    manifests = Path(output) / "manifests"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if manifests.exists() and len(list(manifests.glob("*.json"))) >= at_least:
            return
        time.sleep(0.05)


def test_sigkill_at_several_points_then_rerun_gives_the_same_cache(corpus, reference, tmp_path,
                                                                   ray_runtime):
    output = str(tmp_path / "killed")
    kills = 0
    for at in (1, 4):
        proc = _launch(corpus, output)
        _wait_for_generation(output, at, proc)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray runtime
            kills += 1
        proc.wait(timeout=30)
    assert kills >= 1
    assert verify_cache(output).ok  # what was committed before each kill is intact
    result = run_generation(_config(corpus, output, **SMALL_UNITS), progress=False)
    assert result.ok and result.report["units_skipped"] > 0
    assert _shard_hashes(output) == _shard_hashes(reference)  # same bytes as uninterrupted
    ids = [r["sample_id"] for r in CacheReader(output).iter_records(fields=["seed"])]
    assert len(ids) == len(set(ids)) == 2 * len(CLASSES)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.cluster
def test_ray_job_submit_produces_the_same_bytes(corpus, reference, tmp_path):
    submitted = str(tmp_path / "submitted")
    bin_dir = Path(sys.executable).parent
    port, dash = _free_port(), _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    import tempfile

    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # unix socket paths must stay short
    subprocess.run([str(bin_dir / "ray"), "start", "--head", "--port", str(port),
                    "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(dash), "--num-cpus", "2",
                    # the session's own Ray runtime already holds the default agent port
                    "--dashboard-agent-listen-port", str(_free_port()), f"--temp-dir={temp}",
                    "--include-dashboard", "true"], env=env, check=True, timeout=120,
                   capture_output=True)
    try:
        # The project is installed in this interpreter; a real cluster ships it with
        # infra/ray/runtime_env.yaml (working_dir) or the container image.
        cmd = [str(bin_dir / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--",
               sys.executable, "-m", "teacher_jobs", "generate", "--prompts", corpus,
               "--output", submitted, "--samples-per-shard", "2", "--steps", "4",
               "--seeds-per-prompt", "2", "--num-actors", "2", "--commit-every", "100",
               "--ray-address", "auto"]
        out = None
        for _ in range(10):  # the dashboard's job agent may need a few seconds after start
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                                 check=False)
            if out.returncode == 0 or not any(m in out.stdout + out.stderr for m in ("Connection", "try again")):
                break
            time.sleep(1.0)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    finally:
        kill_processes_under(temp)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)
    assert _shard_hashes(submitted) == _shard_hashes(reference)
    assert json.loads((Path(submitted) / "manifests" / "000001.json").read_text())["num_samples"] == 36


def test_generation_with_the_tiny_wan_teacher(tmp_path, ray_runtime):
    corpus = tmp_path / "wan.jsonl"
    corpus.write_text('{"prompt": "a red cat running left", "seed": [0, 1]}\n'
                      '{"prompt": "blue ocean wave at night"}\nnot json\n')
    output = str(tmp_path / "wan-cache")
    config = JobConfig.load(None, teacher={"spec": "wan-tiny", "steps": 4, "guidance": (4.0, 3.0)},
                            prompts=str(corpus), output=output, encoding="zarr", samples_per_shard=2,
                            height=32, width=32, frames=9, keep_steps="0,2", num_actors=1)
    result = run_generation(config, progress=False)
    assert result.ok, result.report["units_failed"]
    assert [r["line"] for r in result.report["corpus_rejections"]] == [3]
    manifest = load_manifest(output)
    assert manifest.num_samples == 3 and manifest.layout.latent_shape == (16, 3, 4, 4)
    assert manifest.fingerprint["teacher"] == "wan"
    assert verify_cache(output, deep=True).ok
    states = [r["states"] for r in CacheReader(output).iter_records(fields=["states"], steps=[2])]
    assert all(s.shape == (1, 16, 3, 4, 4) for s in states)


@pytest.mark.slow  # three jobs (~90 s on the loaded 2-core machine); the record-level check
# runs by default (test_teacher_wan.py::test_a_samples_bytes_do_not_depend_on_the_micro_batch...)
def test_tiny_wan_job_shards_are_byte_identical_at_micro_batch_1_3_and_8(tmp_path, ray_runtime):
    """Batch invariance through the whole job (real local Ray): one unit of 8 samples recorded
    as 8 x 1, 3 + 3 + 2 and 1 x 8 gives the same shard bytes, and one fingerprint (so a job may
    resume with another micro-batch)."""
    corpus = tmp_path / "wan.txt"
    corpus.write_text("\n".join(f"a {c} cat running {d}" for c in ("red", "blue", "green", "white")
                                for d in ("left", "right")) + "\n")
    shards, fingerprints = {}, {}
    for micro_batch in (1, 3, 8):
        output = str(tmp_path / f"mb{micro_batch}")
        config = JobConfig.load(None, teacher={"spec": "wan-tiny", "steps": 2, "micro_batch": micro_batch},
                                prompts=str(corpus), output=output, samples_per_shard=8,
                                height=32, width=32, frames=9, keep_steps="all", num_actors=1)
        result = run_generation(config, progress=False)
        assert result.ok, result.report["units_failed"]
        manifest = load_manifest(output)
        assert manifest.num_samples == 8 and len(manifest.shards) == 1
        shards[micro_batch] = {s.name: (Path(output) / s.path).read_bytes() for s in manifest.shards}
        fingerprints[micro_batch] = manifest.fingerprint
    assert shards[3] == shards[1] and shards[8] == shards[1]
    assert fingerprints[3] == fingerprints[1] == fingerprints[8]
