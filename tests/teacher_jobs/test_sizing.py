"""GPU-sized units (issue 27): the plan chooses samples per shard and the commit cadence from
the cost estimate, so a preemption loses minutes of GPU time, not hours."""

from __future__ import annotations

from pathlib import Path

from teacher_jobs.config import JobConfig
from teacher_jobs.gpus import CostEstimate
from teacher_jobs.sizing import (
    COMMIT_INTERVAL_S,
    DEFAULT_COMMIT_EVERY,
    DEFAULT_SAMPLES_PER_SHARD,
    UNIT_TARGET_S,
    job_cost,
    size_units,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_a14b_config_gets_units_of_minutes_and_commits_every_quarter_hour():
    config = JobConfig.load(str(ROOT / "configs/wan22_a14b.toml"))
    assert config.samples_per_shard is None and config.commit_every is None  # left to the plan
    memory = config.teacher.memory_plan(config.video, gpu_memory_gb=config.gpu_memory_gb)
    for gpu, per_shard in (("a100-80g", 1), ("h100", 2)):
        cost = job_cost(JobConfig.load(str(ROOT / "configs/wan22_a14b.toml"), gpu=gpu), memory)
        plan = size_units(samples_per_shard=None, commit_every=None, actors=config.num_actors, cost=cost)
        assert plan.samples_per_shard == per_shard, gpu
        assert UNIT_TARGET_S / 2 < plan.seconds_per_unit <= UNIT_TARGET_S  # was 32 x 786 s = 7 h
        wall_between_commits = plan.commit_every * plan.seconds_per_unit / config.num_actors
        assert abs(wall_between_commits - COMMIT_INTERVAL_S) <= plan.seconds_per_unit / config.num_actors
        assert "GPU-minutes a unit" in plan.describe() and gpu in plan.basis


def test_explicit_sizes_win_and_no_estimate_keeps_the_cpu_defaults():
    cost = CostEstimate(gpu="h100", seconds_per_sample=10.0, basis="measured: --throughput")
    cheap = size_units(samples_per_shard=None, commit_every=None, actors=4, cost=cost)
    assert cheap.samples_per_shard == 90 and cheap.commit_every == 4  # 900 s units, 4 actors
    fixed = size_units(samples_per_shard=32, commit_every=16, actors=8, cost=cost)
    assert (fixed.samples_per_shard, fixed.commit_every, fixed.seconds_per_unit) == (32, 16, 320.0)
    none = size_units(samples_per_shard=None, commit_every=None, actors=8, cost=None)
    assert (none.samples_per_shard, none.commit_every) == (DEFAULT_SAMPLES_PER_SHARD, DEFAULT_COMMIT_EVERY)
    slow = CostEstimate(gpu="a100-80g", seconds_per_sample=3600.0, basis="measured")
    assert size_units(samples_per_shard=None, commit_every=None, actors=1, cost=slow).samples_per_shard == 1
