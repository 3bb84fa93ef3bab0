"""Offload of the Wan teacher (issue 27): each model runs while it is on the device, at most
what the memory plan counts sits there beside it, the host <-> GPU traffic per micro-batch is
the plan's, and the records do not depend on the policy. On CPU device and host are one, so
the test reads the teacher's own residency (teachers/wan_offload.py), which every move updates.

Before: ``offload = "model"`` was diffusers' model CPU offload, whose hooks free a model only
when the next one of text_encoder -> transformer -> transformer_2 -> vae runs; the job never
runs the VAE, so after the first sample both experts stayed on the GPU while the plan counted
one (and the policy was refused on CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from teacher_jobs.sampler import record_trajectories
from teacher_jobs.teachers.wan import WanTeacher, pipeline_configs
from teacher_jobs.teachers.wan_plan import plan_actor

PROMPTS = ["a red cat running left", "blue ocean wave at night", "a green car", "the dog"]


def _run(offload: str, micro_batch: int):
    teacher = WanTeacher.tiny(offload=offload)
    seen: list[tuple[str, frozenset[str]]] = []  # (model that ran, models on the device then)
    for name, module in teacher.residency.models.items():
        module.register_forward_pre_hook(
            lambda _m, _a, name=name: seen.append((name, frozenset(teacher.residency.on_device))))
    teacher.residency.moved_bytes = 0
    records, rejected = record_trajectories(teacher, PROMPTS, list(range(len(PROMPTS))),
                                            global_seed=0, keep_steps=range(6),
                                            micro_batch=micro_batch)
    assert not rejected
    return teacher, seen, records


@pytest.fixture(scope="module")
def runs() -> dict:
    """One job-like run per policy: 4 prompts in micro-batches of 2."""
    return {offload: _run(offload, micro_batch=2) for offload in ("none", "expert", "model")}


def _bytes(modules) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


@pytest.mark.parametrize("offload", ["none", "expert", "model"])
def test_offload_keeps_on_the_device_what_the_plan_counts_and_moves_what_it_charges(runs, offload):
    teacher, seen, _ = runs[offload]
    models = teacher.residency.models
    assert {name for name, _ in seen} >= {"text_encoder", "transformer", "transformer_2"}
    assert all(name in resident for name, resident in seen)  # every model ran on the device
    plan = plan_actor(pipeline_configs(teacher.pipe), latent_shape=teacher.latent_shape, steps=6,
                      dtype="float32", vae_dtype="float32", offload=offload, micro_batch=2,
                      gpu_memory_gb=80)
    planned = {name for name, c in plan.components.items() if c.on_gpu_at_peak}
    peak = max(_bytes(models[n] for n in resident) for _, resident in seen)
    largest_model = max(models, key=lambda n: _bytes([models[n]]))  # the tiny VAE (fp32)
    expected = {"none": set(models), "expert": set(models) - {"transformer_2"},
                "model": {largest_model}}[offload]
    assert planned == expected
    if offload == "model":  # one model at a time; the job's loop never runs the VAE
        assert max(len(r) for _, r in seen) == 1 and peak <= _bytes([models[largest_model]])
    else:
        assert peak == _bytes(models[n] for n in planned)
    # two micro-batches of two samples; the first starts from the placement, the rest repeat
    per_micro_batch = plan.swap_gb_per_sample * 2 * 1e9
    first = {"none": 0, "expert": per_micro_batch / 2,
             "model": per_micro_batch - _bytes([models["transformer_2"]])}[offload]
    assert teacher.residency.moved_bytes == pytest.approx(first + per_micro_batch, rel=1e-9)


def test_records_do_not_depend_on_the_offload_policy(runs):
    records = {offload: [{k: np.asarray(v).tobytes() for k, v in r.items()} for r in run[2]]
               for offload, run in runs.items()}
    assert len(records["none"]) == len(PROMPTS)
    assert records["expert"] == records["none"] and records["model"] == records["none"]


def test_micro_batches_share_the_expert_swaps_and_the_cost_charges_them():
    """The shipped A14B plan: expert offload moves two 28.6 GB experts in and out per
    micro-batch; micro-batch 4 shares them across 4 samples, and the estimate charges less."""
    from teacher_jobs.teachers.wan_plan import shipped_configs

    def plan(offload, micro_batch):
        return plan_actor(shipped_configs("t2v-a14b"), latent_shape=(16, 21, 60, 104), steps=40,
                          dtype="bfloat16", vae_dtype="float32", offload=offload,
                          micro_batch=micro_batch, gpu_memory_gb=80)

    one, four, none, model = plan("expert", 1), plan("expert", 4), plan("none", 1), plan("model", 1)
    expert_gb = one.components["transformer"].bytes / 1e9
    assert one.swap_gb_per_sample == pytest.approx(4 * expert_gb)  # 2 in, 2 out
    assert four.swap_gb_per_sample == pytest.approx(expert_gb)
    assert none.swap_gb_per_sample == 0 < one.swap_gb_per_sample < model.swap_gb_per_sample
    seconds = [p.cost("a100-80g").seconds_per_sample for p in (none, four, one, model)]
    assert seconds == sorted(seconds) and seconds[0] < seconds[-1]
