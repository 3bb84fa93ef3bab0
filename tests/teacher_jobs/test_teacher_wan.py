"""Wan 2.2 teacher on a tiny random two-expert pipeline: equality with stock WanPipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cache_schema import flow, validate_record
from cache_schema.noise import batch_noise
from cache_schema.sample_id import make_sample_id
from teacher_jobs.sampler import record_trajectories, sample_latents
from teacher_jobs.teachers import build_teacher
from teacher_jobs.teachers.wan import WanTeacher

PROMPTS = ["a red cat running left", "blue ocean wave at night"]
SETTINGS = {"height": 32, "width": 32, "frames": 9, "num_steps": 6, "shift": 3.0, "guidance": (4.0, 3.0),
                "max_text_len": 16}


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("wan") / "tiny-wan22"
    WanTeacher.tiny().pipe.save_pretrained(str(path))
    return str(path)


def _stock(teacher: WanTeacher, noise: torch.Tensor, scheduler) -> torch.Tensor:
    """Stock WanPipeline, one prompt per call: the teacher runs its transformer one sample at a
    time (batch invariance), and stock WanPipeline itself rounds differently at batch 2."""
    teacher.pipe.scheduler = scheduler
    return torch.cat([teacher.pipe(prompt=[prompt], negative_prompt="", height=32, width=32,
                                   num_frames=9, num_inference_steps=6, guidance_scale=4.0,
                                   guidance_scale_2=3.0, latents=noise[i:i + 1].clone(),
                                   output_type="latent", max_sequence_length=16).frames
                      for i, prompt in enumerate(PROMPTS)])


@pytest.mark.parametrize("solver", ["euler", "unipc"])
def test_recorded_loop_equals_stock_wan_pipeline(saved_pipeline, solver):
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    teacher = WanTeacher.from_pretrained(saved_pipeline, solver=solver, **SETTINGS)
    ours = torch.from_numpy(sample_latents(teacher, PROMPTS, [0, 1], global_seed=5, fingerprint_digest="d"))
    ids = [make_sample_id(p, s, "d") for p, s in zip(PROMPTS, [0, 1])]
    noise = torch.from_numpy(batch_noise(5, ids, teacher.latent_shape))
    config = teacher.pipe.scheduler.config
    if solver == "euler":
        stock = _stock(teacher, noise, FlowMatchEulerDiscreteScheduler.from_config(config, shift=3.0))
        assert torch.equal(ours, stock)
    else:
        stock = _stock(teacher, noise, UniPCMultistepScheduler.from_config(
            config, flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction"))
        torch.testing.assert_close(ours, stock, rtol=1e-4, atol=1e-4)
    assert ours.abs().sum() > 0


def test_expert_switch_at_boundary_and_cfg_rebuilds_next_state(saved_pipeline):
    teacher = build_teacher(f"wan:{saved_pipeline}", **SETTINGS)
    boundary = 0.875 * 1000
    experts = [teacher.expert_at(i) for i in range(6)]
    assert experts == [0 if t >= boundary else 1 for t in teacher.timesteps()]
    assert 0 in experts and 1 in experts
    records, rejected = record_trajectories(teacher, PROMPTS, [0, 1], global_seed=0,
                                            keep_steps=range(6))
    assert not rejected
    layout = teacher.layout(tuple(range(6)))
    sig = teacher.sigmas()
    for rec in records:
        validate_record(rec, layout)
        assert list(rec["guidance"]) == [4.0 if e == 0 else 3.0 for e in experts]
        states = rec["states"].astype(np.float32)
        v = flow.classifier_free_guidance(rec["v_uncond"].astype(np.float32), rec["v_cond"].astype(np.float32),
                                          rec["guidance"][:, None, None, None, None])
        for i in range(5):
            np.testing.assert_allclose(flow.euler_step(states[i], sig[i], sig[i + 1], v[i]),
                                       states[i + 1], atol=3e-2, rtol=1e-2)
    fp = teacher.fingerprint()
    files = fp["checkpoint"]["files"]
    digests = {k.split("/")[0]: v for k, v in files.items() if k.endswith(".safetensors")}
    assert digests["transformer"] != digests["transformer_2"]  # sha256 of each expert's file


def test_offline_without_weights_fails_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="hf download"):
        WanTeacher.from_pretrained(str(tmp_path / "no-such-wan"))
    with pytest.raises(RuntimeError, match="--teacher wan:DIR"):
        build_teacher("wan:Wan-AI/Wan2.2-T2V-A14B-Diffusers")


def test_wan_rejects_prompts_longer_than_the_encoder_limit(saved_pipeline):
    teacher = WanTeacher.from_pretrained(saved_pipeline, **SETTINGS)
    records, rejected = record_trajectories(teacher, ["cat " * 40, "a dog"], [0, 0], global_seed=0,
                                            keep_steps=[0])
    assert len(records) == 1 and "limit of 16" in rejected[0].reason


def test_stored_text_length_is_the_pipelines_seq_len_after_prompt_clean(saved_pipeline):
    """diffusers' WanPipeline cleans a prompt (HTML entities, and ftfy where installed) before it
    tokenises; the stored text_emb must have exactly the pipeline's token count."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    teacher = build_teacher(f"wan:{saved_pipeline}", **SETTINGS)
    prompt = "a red cat &amp; a dog"
    tok = teacher.pipe.tokenizer
    pipeline_len = sum(tok([prompt_clean(prompt)], padding="max_length", max_length=16, truncation=True,
                           add_special_tokens=True, return_attention_mask=True).attention_mask[0])
    raw_len = len(tok(prompt, add_special_tokens=True).input_ids)
    assert raw_len != pipeline_len  # the case is meaningful: cleaning changes the token count
    records, rejected = record_trajectories(teacher, [prompt], [0], global_seed=0, keep_steps=range(6))
    assert not rejected
    assert records[0]["text_emb"].shape[0] == pipeline_len == teacher.count_tokens(prompt)


@pytest.mark.parametrize("solver", ["euler", "unipc"])
def test_a_samples_bytes_do_not_depend_on_the_micro_batch_or_its_neighbours(saved_pipeline, solver):
    """Micro-batch 1, 3 and 8 give byte-identical records, and a sample recorded alone equals
    the same sample among seven others. (Before the teacher ran its transformer and text encoder
    one sample at a time, micro-batch 8 differed from 1 by up to 1 ulp of fp16: on this CPU
    GEMMs with fewer than 4 rows, like the timestep embedding's, and elementwise tails round
    differently; session 7 bisected it with per-module hooks.)"""
    teacher = build_teacher(f"wan:{saved_pipeline}", solver=solver, **SETTINGS)
    prompts = [f"a {c} cat running {d}" for c in ("red", "blue", "green", "white")
               for d in ("left", "right")]
    seeds = list(range(len(prompts)))

    def as_bytes(records):
        return {r["sample_id"]: {k: np.asarray(v).tobytes() for k, v in r.items()} for r in records}

    runs = {}
    for micro_batch in (1, 3, 8):
        records, rejected = record_trajectories(teacher, prompts, seeds, global_seed=0,
                                                keep_steps=range(6), micro_batch=micro_batch)
        assert not rejected and len(records) == len(prompts)
        runs[micro_batch] = as_bytes(records)
    assert runs[3] == runs[1] and runs[8] == runs[1]
    alone, _ = record_trajectories(teacher, prompts[5:6], seeds[5:6], global_seed=0,
                                   keep_steps=range(6), micro_batch=1)
    assert as_bytes(alone).items() <= runs[8].items()


def test_bf16_expert_offload_micro_batch_2_equals_stock_pipeline_and_micro_batch_1(saved_pipeline, tmp_path):
    """The must-show of issue 14: the teacher in bfloat16 (VAE float32) with offload 'expert'
    and micro-batch 2 gives stock WanPipeline's x0 in bfloat16 from the cached noise (within
    bfloat16 rounding: stock runs both prompts in one batch-2 forward), and the same record
    bytes as micro-batch 1."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    settings = {**SETTINGS, "num_steps": 4}
    teacher = WanTeacher.from_pretrained(saved_pipeline, solver="euler", dtype="bfloat16",
                                         offload="expert", **settings)
    assert teacher.pipe.transformer.dtype == torch.bfloat16 and teacher.pipe.vae.dtype == torch.float32
    runs = {}
    for micro_batch in (2, 1):
        records, rejected = record_trajectories(teacher, PROMPTS, [0, 1], global_seed=3,
                                                keep_steps=range(4), micro_batch=micro_batch)
        assert not rejected
        runs[micro_batch] = records
    assert [{k: np.asarray(v).tobytes() for k, v in r.items()} for r in runs[2]] == \
        [{k: np.asarray(v).tobytes() for k, v in r.items()} for r in runs[1]]
    from cache_schema import write_shard

    layout = teacher.layout(tuple(range(4)))
    shards = [write_shard(str(tmp_path / f"mb{mb}"), runs[mb], layout=layout, encoding="wds",
                          shard_name="u0").path for mb in (2, 1)]
    assert (tmp_path / "mb2" / shards[0]).read_bytes() == (tmp_path / "mb1" / shards[1]).read_bytes()
    assert teacher.expert_at(0) == 0 and teacher.expert_at(3) == 1  # both experts ran
    # the cached noise: regenerated from (global seed, sample id), equal to the stored fp16 copy
    noise = torch.from_numpy(batch_noise(3, [r["sample_id"] for r in runs[2]], teacher.latent_shape))
    assert np.array_equal(noise.numpy().astype(np.float16), np.stack([r["noise"] for r in runs[2]]))
    stock = WanPipeline.from_pretrained(saved_pipeline, dtype={"default": torch.bfloat16,
                                                               "vae": torch.float32})
    stock.scheduler = FlowMatchEulerDiscreteScheduler.from_config(stock.scheduler.config, shift=3.0)
    expected = stock(prompt=PROMPTS, negative_prompt="", height=32, width=32, num_frames=9,
                     num_inference_steps=4, guidance_scale=4.0, guidance_scale_2=3.0,
                     latents=noise.clone(), output_type="latent", max_sequence_length=16).frames
    ours = torch.from_numpy(np.stack([r["x0"] for r in runs[2]]).astype(np.float32))
    scale = expected.float().abs().max().item()
    assert scale > 0.1
    # within bf16 rounding (measured: equal, as stock's Euler step rounds latents to bf16 too)
    assert (ours - expected.float()).abs().max().item() <= 0.02 * scale


@pytest.mark.parametrize("variant, size, variant_name", [
    ("t2v-2.1", 32, "single-expert"), ("ti2v-5b", 64, "single-expert+expand_timesteps")])
def test_single_expert_checkpoints_are_teachers_equal_to_stock_pipeline(variant, size, variant_name, tmp_path):
    """Wan 2.1 T2V (one transformer) and Wan 2.2 TI2V-5B (one transformer, 48-channel VAE at
    16x, one timestep per token) as tiny random checkpoints: planned from files by the driver,
    loaded and checked by the actor's code, and equal to stock WanPipeline bit for bit (Euler)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    from teacher_jobs.teachers import make_settings
    from teacher_jobs.teachers.spec import VideoSize

    folder = tmp_path / variant
    WanTeacher.tiny(variant=variant, height=size, width=size).pipe.save_pretrained(str(folder))
    settings = make_settings({"kind": "wan", "source": str(folder), "dtype": "float32", "solver": "euler",
                              "steps": 4, "shift": 3.0, "guidance": [4.0], "max_text_len": 16,
                              "negative_prompt": ""})
    video = VideoSize(height=size, width=size, frames=9)
    plan = settings.driver_plan(video)  # from files
    teacher = settings.build(video, device="cpu")
    settings.check_loaded(teacher, plan.fingerprint)  # the actor's check passes
    assert plan.fingerprint["variant"] == variant_name and plan.fingerprint["guidance"] == [4.0]
    assert tuple(plan.layout_args["latent_shape"]) == teacher.latent_shape
    assert teacher.latent_shape[0] == (48 if variant == "ti2v-5b" else 16)
    assert [teacher.expert_at(i) for i in range(4)] == [0] * 4
    ours = torch.from_numpy(sample_latents(teacher, PROMPTS, [0, 1], global_seed=5, fingerprint_digest="d"))
    noise = torch.from_numpy(batch_noise(5, [make_sample_id(p, s, "d") for p, s in zip(PROMPTS, [0, 1])],
                                         teacher.latent_shape))
    stock = WanPipeline.from_pretrained(str(folder))
    assert stock.transformer_2 is None and stock.config.expand_timesteps == (variant == "ti2v-5b")
    stock.scheduler = FlowMatchEulerDiscreteScheduler.from_config(stock.scheduler.config, shift=3.0)
    expected = torch.cat([stock(prompt=[p], negative_prompt="", height=size, width=size, num_frames=9,
                                num_inference_steps=4, guidance_scale=4.0, latents=noise[i:i + 1].clone(),
                                output_type="latent", max_sequence_length=16).frames
                          for i, p in enumerate(PROMPTS)])
    assert torch.equal(ours, expected) and ours.abs().sum() > 0
    with pytest.raises(ValueError, match="single transformer"):
        make_settings({"kind": "wan", "source": str(folder), "boundary": 0.9}).driver_plan(video)
