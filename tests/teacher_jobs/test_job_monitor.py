"""Issue 27: the cache job's Ray metrics and stall alert. A toy teacher that hangs on one
prompt makes the job warn (one line naming the actor, the status file, the `stalled` metric)
within a bounded time; a normal job warns never; Ray's Prometheus endpoint serves the job's
metrics while it runs."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from cache_schema import flow
from teacher_jobs import monitor as monitor_module
from teacher_jobs.config import JobConfig
from teacher_jobs.job import STATUS_FILE, run_generation
from teacher_jobs.monitor import STALL_FACTOR, JobMonitor
from teacher_jobs.teachers import TEACHERS, register_teacher
from teacher_jobs.teachers.base import EncodedText, Teacher
from teacher_jobs.teachers.spec import DriverPlan, TeacherSettings, VideoSize
from teacher_jobs.teachers.video_limits import SizeGrid, VideoLimits

DIM, TOKENS = 4, 4
PROMPTS = ["a red cat", "a blue dog", "hang green bird", "two tall trees", "the wide sea"]


class HangTeacher(Teacher):
    """Velocity pulls towards a per-prompt constant; a prompt with "hang" in it sleeps
    ``hang_s`` once, after writing the time it started to ``marker``."""

    def __init__(self, hang_s: float, marker: str):
        self.latent_shape, self.num_steps, self.hang_s, self.marker = (2, 1, 2, 2), 2, hang_s, marker
        self.text_dim, self.max_text_len = DIM, TOKENS
        self.device, self.dtype, self.guidance = torch.device("cpu"), torch.float32, (1.0,)

    def fingerprint(self) -> dict[str, Any]:
        return {"teacher": "hang-toy", "latent_shape": list(self.latent_shape), "steps": 2}

    def count_tokens(self, prompt: str) -> int:
        return len(prompt.split())

    def encode_prompts(self, prompts: list[str]) -> EncodedText:
        emb = torch.tensor([[[float(len(p))] * DIM] * TOKENS for p in prompts])
        return EncodedText(emb=emb, lengths=[TOKENS] * len(prompts), prompts=list(prompts))

    def velocity(self, x, step, text, neg_text):
        if step == 0 and self.hang_s and any("hang" in p for p in text.prompts):
            Path(self.marker).write_text(str(time.time()))
            time.sleep(self.hang_s)
        return x - text.emb.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1) / 10, x

    def sigmas(self) -> np.ndarray:
        return flow.euler_sigmas(2, 1.0)


@dataclass(kw_only=True, slots=True)
class HangSettings(TeacherSettings):
    kind: ClassVar[str] = "hang-toy-test"
    steps: int = 2
    hang_s: float = 0.0
    marker: str = ""

    def video_limits(self, video: VideoSize) -> VideoLimits:
        return VideoLimits(teacher="the hang toy teacher", height=SizeGrid(), width=SizeGrid(),
                           frames=SizeGrid())

    def build(self, video: VideoSize, *, device: str) -> HangTeacher:
        return HangTeacher(self.hang_s, self.marker)

    def driver_plan(self, video: VideoSize) -> DriverPlan:
        teacher = HangTeacher(0.0, "")
        return DriverPlan(fingerprint=teacher.fingerprint(),
                          layout_args={"latent_shape": teacher.latent_shape, "num_steps": 2,
                                       "text_dim": DIM, "max_text_len": TOKENS},
                          max_tokens=TOKENS, count_tokens=teacher.count_tokens)


@pytest.fixture
def hang_kind(ray_runtime):
    import ray.cloudpickle

    register_teacher(HangSettings)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors cannot import tests
    yield HangSettings
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    TEACHERS.unregister(HangSettings.kind)


def _config(tmp_path: Path, teacher: dict[str, Any] | None = None, **job: Any) -> JobConfig:
    """One actor, units of one sample, a commit per unit."""
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("\n".join(PROMPTS) + "\n")
    base = {"prompts": str(corpus), "output": str(tmp_path / "cache"), "height": 16, "width": 16,
            "frames": 1, "samples_per_shard": 1, "num_actors": 1, "commit_every": 1,
            "placement_timeout_s": 60.0, "stall_timeout_s": 120.0}
    return JobConfig(teacher={"kind": HangSettings.kind, **(teacher or {})}, **{**base, **job})


class _Watcher:
    """Reads the status file and scrapes Ray's metrics endpoint while the job runs."""

    def __init__(self, status: Path):
        import ray

        port = ray._private.worker._global_node.metrics_export_port
        self.url, self.status = f"http://127.0.0.1:{port}/metrics", status
        self.states: list[dict] = []
        self.samples: dict[str, list[float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            try:
                self.states.append(json.loads(self.status.read_text()))
            except (OSError, ValueError):
                pass  # not written yet, or caught mid-write by a non-atomic local put
            try:
                text = urllib.request.urlopen(self.url, timeout=2).read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("ray_s2dit_cache_") and str(self.status.parent.parent) in line:
                    name, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
                    self.samples.setdefault(name, []).append(value)


def _alerts(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "s2dit.cache_job" and r.levelno == logging.WARNING]


def test_a_teacher_hanging_on_one_shard_raises_one_alert_in_time_and_the_metrics_show_it(
        hang_kind, tmp_path, caplog):
    marker = tmp_path / "hang-started"
    config = _config(tmp_path, {"hang_s": 16.0, "marker": str(marker)}, stall_after_s=2.0)
    caplog.set_level(logging.WARNING, logger="s2dit.cache_job")
    with _Watcher(Path(config.output) / STATUS_FILE) as watch:
        result = run_generation(config, progress=False)
    assert result.ok, result.report
    alerts = _alerts(caplog)
    assert len(alerts) == 1, result.report["stall_alerts"]  # one line per stall
    line, hang_started = alerts[0].getMessage(), float(marker.read_text())
    assert "\n" not in line and line.startswith("WARNING cache job stalled: no shard finished")
    assert "stall_after_s = 2 s: configured" in line and "actor 0 (Ray actor " in line
    assert "(0 of 1 sample)" in line and "ray logs actor --id" in line
    # within the bound (plus the driver's half-second poll and a loaded machine's slack)
    assert hang_started < alerts[0].created < hang_started + config.stall_after_s + 4.0
    assert result.report["stall_alerts"] == [line]
    stalled = [s for s in watch.states if s["state"] == "stalled"]
    assert stalled and stalled[0]["alert"] == line and stalled[0]["stalled"] == 1
    final = json.loads((Path(config.output) / STATUS_FILE).read_text())
    assert final["state"] == "finished" and final["alert"] is None
    assert final["samples_committed"] == final["samples_done"] == len(PROMPTS)
    # Ray's Prometheus endpoint served the job's metrics while it ran
    metrics = watch.samples
    assert max(metrics["ray_s2dit_cache_samples_committed_total"]) >= 2
    assert max(metrics["ray_s2dit_cache_shards_committed_total"]) >= 2
    assert max(metrics["ray_s2dit_cache_stalled"]) == 1.0
    assert max(metrics["ray_s2dit_cache_actor_last_progress_age_seconds"]) >= config.stall_after_s
    assert metrics["ray_s2dit_cache_samples_total"][-1] == len(PROMPTS)
    assert "ray_s2dit_cache_samples_per_second" in metrics


def test_a_normal_job_raises_no_alert_with_the_derived_bound(hang_kind, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(monitor_module, "STALL_FLOOR_S", 10.0)  # the bound a normal job stays under
    config = _config(tmp_path)
    caplog.set_level(logging.WARNING, logger="s2dit.cache_job")
    result = run_generation(config, progress=False)
    assert result.ok and result.report["stall_alerts"] == [] and _alerts(caplog) == []
    status = json.loads((Path(config.output) / STATUS_FILE).read_text())
    assert status["state"] == "finished" and status["stalled"] == 0
    assert status["stall_basis"].startswith(f"{STALL_FACTOR:g}x the median shard time")
    assert status["samples_done"] == status["samples_total"] == len(PROMPTS)


def test_the_derived_bound_alerts_a_hang_long_against_the_measured_shards(hang_kind, tmp_path, caplog,
                                                                          monkeypatch):
    monkeypatch.setattr(monitor_module, "STALL_FLOOR_S", 1.0)
    config = _config(tmp_path, {"hang_s": 8.0, "marker": str(tmp_path / "m")})
    caplog.set_level(logging.WARNING, logger="s2dit.cache_job")
    assert run_generation(config, progress=False).ok
    (alert,) = _alerts(caplog)
    assert "x the median shard time" in alert.getMessage()


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bound_comes_from_the_config_the_measured_shards_the_estimate_or_the_floor():
    floor = monitor_module.STALL_FLOOR_S
    assert JobMonitor(stall_after_s=42.0, stall_timeout_s=1e4, estimate_s=None,
                      samples_total=1).stall_after() == (42.0, "configured")
    assert JobMonitor(stall_after_s=None, stall_timeout_s=1e4, estimate_s=None,
                      samples_total=1).stall_after()[0] == floor
    estimated = JobMonitor(stall_after_s=None, stall_timeout_s=1e4, estimate_s=900.0, samples_total=1)
    assert estimated.stall_after() == (4500.0, "5x the plan's 900 s a shard")
    measured = JobMonitor(stall_after_s=None, stall_timeout_s=1e4, estimate_s=900.0,
                          samples_total=1, shard_seconds=[300.0, 200.0, 5000.0])
    assert measured.stall_after()[0] == 5 * 300.0  # the median, not the mean or the estimate
    quick = JobMonitor(stall_after_s=None, stall_timeout_s=1e4, estimate_s=None,
                       samples_total=1, shard_seconds=[1.0])
    assert quick.stall_after()[0] == floor and "floor" in quick.stall_after()[1]


def test_the_alert_names_only_the_actors_without_progress_and_rearms_after_a_shard():
    clock = _Clock()
    mon = JobMonitor(stall_after_s=10.0, stall_timeout_s=60.0, estimate_s=None, samples_total=4,
                     clock=clock)
    assert mon.check({}) is None  # no actor ready yet: loading has its own bound
    mon.sync_actors({0: "aaaa", 1: "bbbb"})
    clock.now += 9.0
    assert mon.check({}) is None
    mon.progressed(1)  # actor 1 reports a sample; actor 0 says nothing
    clock.now += 2.0
    line = mon.check({0: ["shard_x (0 of 4 samples)"], 1: ["shard_y (3 of 4 samples)"]})
    assert line is not None and "actor 0 (Ray actor aaaa" in line and "shard_x" in line
    assert "actor 1" not in line and "bbbb" not in line
    assert mon.check({}) is None  # once per stall
    assert mon.snapshot(3, 0.1)["stalled"] == 1
    mon.shard_done(1, 5.0)
    assert mon.snapshot(4, 0.1)["stalled"] == 0
    mon.sync_actors({0: "cccc", 1: "bbbb"})  # actor 0 replaced: its clock starts again
    clock.now += 10.5
    line = mon.check({})
    assert "cccc" in line and "aaaa" not in line and len(mon.alerts) == 2


def test_an_alert_while_every_actor_reports_samples_says_shards_are_slow_not_stuck():
    clock = _Clock()
    mon = JobMonitor(stall_after_s=10.0, stall_timeout_s=60.0, estimate_s=None, samples_total=4,
                     clock=clock)
    mon.sync_actors({0: "aaaa"})
    clock.now += 11.0
    mon.progressed(0)
    assert mon.check({}) is None  # it reported just now: it may yet go quiet, wait
    clock.now += 9.5  # no shard for 20.5 s, twice the bound; the actor quiet for only 9.5 s
    line = mon.check({})
    assert "slower than measured, not stuck" in line and "ray logs" not in line
