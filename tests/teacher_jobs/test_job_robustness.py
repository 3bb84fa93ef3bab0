"""Issue 27: the Ray job's actors on a launch that goes wrong, with a toy teacher whose load
can be slow or fail and whose actor can die mid-unit: placement and load timeouts apart, one
replacement per dead actor, the stall timeout, fail fast on init failures, the budget cap,
and per-sample progress."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from cache_schema import CacheReader, flow, load_manifest
from teacher_jobs import job as job_module
from teacher_jobs import pool as pool_module
from teacher_jobs.config import JobConfig
from teacher_jobs.job import BudgetReached, run_generation
from teacher_jobs.pool import JobStalled, TeacherLoadFailed
from teacher_jobs.teachers import TEACHERS, register_teacher
from teacher_jobs.teachers.base import EncodedText, Teacher
from teacher_jobs.teachers.spec import DriverPlan, TeacherSettings, VideoSize
from teacher_jobs.teachers.video_limits import SizeGrid, VideoLimits

DIM, TOKENS = 4, 4


class SlowTeacher(Teacher):
    """Velocity pulls towards a per-prompt constant; each micro-batch sleeps ``delay`` and the
    first velocity call dies (the whole actor process) while ``die_marker`` exists."""

    def __init__(self, delay: float, die_marker: str):
        self.latent_shape, self.num_steps, self.delay, self.die_marker = (2, 1, 2, 2), 2, delay, die_marker
        self.text_dim, self.max_text_len = DIM, TOKENS
        self.device, self.dtype, self.guidance = torch.device("cpu"), torch.float32, (1.0,)

    def fingerprint(self) -> dict[str, Any]:
        return {"teacher": "slow-toy", "latent_shape": list(self.latent_shape), "steps": 2}

    def count_tokens(self, prompt: str) -> int:
        return len(prompt.split())

    def encode_prompts(self, prompts: list[str]) -> EncodedText:
        emb = torch.tensor([[[float(len(p))] * DIM] * TOKENS for p in prompts])
        return EncodedText(emb=emb, lengths=[TOKENS] * len(prompts), prompts=list(prompts))

    def velocity(self, x, step, text, neg_text):
        if self.die_marker and os.path.exists(self.die_marker):
            os.remove(self.die_marker)
            os._exit(1)  # a preempted node: the actor is gone with its units in flight
        if step == 0:
            time.sleep(self.delay)
        return x - text.emb.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1) / 10, x

    def sigmas(self) -> np.ndarray:
        return flow.euler_sigmas(2, 1.0)


@dataclass(kw_only=True, slots=True)
class SlowSettings(TeacherSettings):
    kind: ClassVar[str] = "slow-toy-test"
    steps: int = 2
    init_delay_s: float = 0.0
    init_error: str = ""
    sample_delay_s: float = 0.0
    die_marker: str = ""

    def video_limits(self, video: VideoSize) -> VideoLimits:
        """Its latent does not depend on the video: any size [job] takes."""
        return VideoLimits(teacher="the slow toy teacher", height=SizeGrid(), width=SizeGrid(),
                           frames=SizeGrid())

    def build(self, video: VideoSize, *, device: str) -> SlowTeacher:
        time.sleep(self.init_delay_s)
        if self.init_error:
            raise RuntimeError(self.init_error)
        return SlowTeacher(self.sample_delay_s, self.die_marker)

    def driver_plan(self, video: VideoSize) -> DriverPlan:
        teacher = SlowTeacher(0.0, "")
        return DriverPlan(fingerprint=teacher.fingerprint(),
                          layout_args={"latent_shape": teacher.latent_shape, "num_steps": 2,
                                       "text_dim": DIM, "max_text_len": TOKENS},
                          max_tokens=TOKENS, count_tokens=teacher.count_tokens)


@pytest.fixture
def slow_kind(ray_runtime):
    import ray.cloudpickle

    register_teacher(SlowSettings)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors cannot import tests
    yield SlowSettings
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    TEACHERS.unregister(SlowSettings.kind)


PROMPTS = ["a red cat", "a blue dog", "one green bird", "two tall trees", "the wide sea", "a small car"]


def _config(tmp_path: Path, teacher: dict[str, Any] | None = None, **job: Any) -> JobConfig:
    """One actor, units of 2 samples, a commit per unit."""
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("\n".join(PROMPTS) + "\n")
    base = {"prompts": str(corpus), "output": str(tmp_path / "cache"), "height": 16, "width": 16,
            "frames": 1, "samples_per_shard": 2, "num_actors": 1, "commit_every": 1,
            "placement_timeout_s": 30.0, "stall_timeout_s": 30.0}
    return JobConfig(teacher={"kind": SlowSettings.kind, **(teacher or {})}, **{**base, **job})


def _each_sample_once(output: str) -> None:
    got = sorted(r["prompt"] for r in CacheReader(output).iter_records(fields=["prompt"]))
    assert got == sorted(PROMPTS)


def test_a_load_longer_than_the_placement_timeout_but_within_the_load_timeout_succeeds(slow_kind, tmp_path):
    config = _config(tmp_path, {"init_delay_s": 5.0}, placement_timeout_s=4.0, load_timeout_s=40.0)
    result = run_generation(config, progress=False)
    assert result.ok, result.report
    loads = [e for e in result.report["actor_events"] if "load_s" in e]
    assert len(loads) == 1 and loads[0]["load_s"] >= 5.0 > config.placement_timeout_s
    _each_sample_once(config.output)


def test_a_killed_actor_gets_exactly_one_replacement_and_every_sample_is_written_once(slow_kind, tmp_path):
    marker = tmp_path / "die"
    marker.touch()  # the first actor dies in its first unit, its second unit queued behind it
    config = _config(tmp_path, {"die_marker": str(marker), "sample_delay_s": 0.3})
    result = run_generation(config, progress=False)
    assert result.ok, result.report
    events = result.report["actor_events"]
    assert result.report["actors_started"] == 2  # the first and its one replacement
    assert [e["actor"] for e in events if "died" in e] == [0]
    _each_sample_once(config.output)


def test_an_unplaceable_replacement_ends_the_job_within_the_stall_timeout(slow_kind, tmp_path, monkeypatch):
    spawned = []

    def options(config):  # the replacement asks for an accelerator this runtime does not have
        spawned.append(1)
        extra = {"resources": {"no-such-accelerator": 1.0}} if len(spawned) > 1 else {}
        return {"num_gpus": 0.0, "num_cpus": 1.0, "max_concurrency": 2, **extra}

    monkeypatch.setattr(pool_module, "actor_options", options)
    marker = tmp_path / "die"
    marker.touch()
    config = _config(tmp_path, {"die_marker": str(marker)}, stall_timeout_s=3.0)
    started = time.monotonic()
    with pytest.raises(JobStalled, match="nothing happened") as caught:
        run_generation(config, progress=False)
    assert "no-such-accelerator" in str(caught.value)  # says what the waiting actor asks for
    assert not marker.exists() and len(spawned) == 2
    assert time.monotonic() - started < config.stall_timeout_s + 15  # death, then the stall bound
    assert caught.value.result.report["stopped"].startswith("JobStalled")


def test_three_init_failures_in_a_row_stop_the_job_naming_the_cause(slow_kind, tmp_path):
    config = _config(tmp_path, {"init_error": "weights not found at /nowhere/wan"})
    with pytest.raises(TeacherLoadFailed, match="3 teacher actors in a row") as caught:
        run_generation(config, progress=False)
    assert "weights not found at /nowhere/wan" in str(caught.value)
    report = caught.value.result.report
    assert report["actors_started"] == 3 and report["samples"] == 0


def test_a_load_over_the_load_timeout_is_an_init_failure(slow_kind, tmp_path):
    config = _config(tmp_path, {"init_delay_s": 60.0}, load_timeout_s=2.0, max_init_failures=1)
    started = time.monotonic()
    with pytest.raises(TeacherLoadFailed, match="did not load within load_timeout_s = 2 s"):
        run_generation(config, progress=False)
    assert time.monotonic() - started < 30  # the stuck actor was killed, not waited for


def test_max_gpu_hours_stops_at_a_commit_and_a_resume_with_a_larger_cap_finishes(slow_kind, tmp_path):
    job = {"samples_per_shard": 1, "teacher": {"sample_delay_s": 1.0}}  # 6 units of ~1 s
    config = _config(tmp_path, **job, max_gpu_hours=6.0 / 3600)  # 6 actor-seconds (CPU job)
    with pytest.raises(BudgetReached, match="max_gpu_hours") as caught:
        run_generation(config, progress=False)
    stopped = load_manifest(config.output)
    assert stopped is not None and 0 < stopped.num_samples < len(PROMPTS)
    report = json.loads((Path(config.output) / f"reports/{stopped.generation:06d}.json").read_text())
    assert report["stopped"].startswith("BudgetReached")  # recorded why, next to the manifests
    spent = report["gpu_hours"]
    assert spent >= config.max_gpu_hours and caught.value.result.report["gpu_hours"] == spent
    resumed = run_generation(_config(tmp_path, **job, max_gpu_hours=1.0), progress=False)
    assert resumed.ok and resumed.report["units_skipped"] == stopped.num_samples
    assert resumed.report["gpu_hours"] > spent  # the cap counts every run of this output
    _each_sample_once(config.output)


class _Bar:
    """Records what the driver's progress bar shows."""

    def __init__(self, total, initial, **_):
        self.n, self.shown = initial, []

    def refresh(self):
        self.shown.append(self.n)

    def close(self):
        pass


def test_actors_report_each_sample_to_the_progress_bar_before_the_unit_ends(slow_kind, tmp_path, monkeypatch):
    bars = []
    monkeypatch.setattr(job_module, "tqdm", lambda **kw: bars.append(_Bar(**kw)) or bars[-1])
    (tmp_path / "one.txt").write_text("\n".join(PROMPTS[:4]) + "\n")
    config = _config(tmp_path, {"sample_delay_s": 1.2, "micro_batch": 1}, samples_per_shard=4,
                     prompts=str(tmp_path / "one.txt"))
    assert run_generation(config, progress=True).ok
    assert bars[0].shown[-1] == 4 and {1, 2, 3} <= set(bars[0].shown)  # one unit, four updates
