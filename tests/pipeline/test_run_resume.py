"""`s2dit run` killed (SIGKILL) during training and run again: the rerun resumes training from
its checkpoint and finishes without regenerating or re-verifying the cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from pipeline.graph import load_run_config
from pipeline.run_api import run_config

CONFIG = """
[run]
seed = 0
[corpus]
kind = "analytic"
train_classes = 3
[job]
seeds_per_prompt = 8
samples_per_shard = 8
num_actors = 1
[job.teacher]
kind = "analytic"
steps = 8
[train]
steps = 60
batch_size = 4
warmup_steps = 2
checkpoint_every = 5
log_every = 5
model = {dim = 16, heads = 2}
[eval]
enabled = false  # scores are not what this test is about
[train_ar]
steps = 1
causal_steps = 1
batch_size = 2
[sample]
count = 1
"""


def _state(out: Path) -> dict:
    return json.loads((out / "run_state.json").read_text())["stages"]


def _wait_for(predicate, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"s2dit run exited ({proc.returncode}) before it could be killed: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "no KD checkpoint appeared in time"
        time.sleep(0.02)


def test_run_killed_during_training_resumes_without_regenerating_the_cache(tmp_path, ray_runtime):
    config_path, out = tmp_path / "run.toml", tmp_path / "run"
    config_path.write_text(CONFIG)
    quiet = Console(quiet=True)
    # the cache stages here, on the test's Ray runtime; training in a process killed below
    for stage in ("corpus", "generate", "verify", "tag"):
        run_config(load_run_config(str(config_path)), out=str(out), only=stage, console=quiet,
                   progress=False)
    before = _state(out)
    generations = sorted(p.name for p in (out / "cache" / "manifests").iterdir())

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config_path),
                             "--out", str(out), "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = out / "student" / "checkpoints" / "LATEST"
    try:
        _wait_for(latest.exists, 120, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    killed = _state(out)
    assert killed["train_kd"]["status"] == "running"
    assert [killed[s] for s in ("corpus", "generate", "verify", "tag")] == \
        [before[s] for s in ("corpus", "generate", "verify", "tag")]
    killed_at = int(latest.read_text().strip().removeprefix("step_"))  # the newest published

    state = run_config(load_run_config(str(config_path)), out=str(out), console=quiet, progress=False)
    after = state.stages
    # the cache stages did not run again: same records, same cache generations
    for stage in ("corpus", "generate", "verify", "tag"):
        assert after[stage] == before[stage], stage
    assert sorted(p.name for p in (out / "cache" / "manifests").iterdir()) == generations
    # training resumed from the killed run's checkpoint, in the same folder, and finished
    assert after["train_kd"]["status"] == "done" and after["train_kd"]["resumed"] == 1
    assert after["train_kd"]["outputs"]["step"] == 60
    events = [json.loads(line) for line in (out / "student" / "metrics.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e.get("event") == "resumed"]
    assert len(resumed) == 1 and resumed[0]["step"] == killed_at and 5 <= killed_at < 60
    skipped = {"eval_kd", "eval_ar", "compare"}  # scores disabled by the config; no [compare]
    assert {s: after[s]["status"] for s in after} == {s: "skipped" if s in skipped else "done" for s in after}
