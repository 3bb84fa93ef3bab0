"""The cluster student at the Wan 2.2-A14B cache's own shape, on the meta device (default suite).

configs/wan22_a14b.toml samples 832x480, 81 frames: the Wan VAE (8x spatial, 4x temporal, 16
channels) gives latents 16x21x60x104, 32,760 tokens a sample at patch 1x2x2. A real CPU step at
that shape needs ~15 GiB a sample in fp32 (tests/pipeline/test_run_full_shape.py measures the
smaller 16x21x36x64 cache, slow), so this test runs the student of configs/wan22_student_gpu.toml
on meta tensors instead: every op checks its shapes, nothing is allocated. A shape bug at the
shipped size (a stride that does not divide the token grid, chunks that are not whole, a state
that does not line up) fails here in seconds, before a GPU is paid for. FLOPs are counted with
torch's FlopCounterMode for BENCHMARKS (the memory plan's arithmetic, not a measurement).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cache_schema import CacheLayout, parse_keep_steps
from student_train.config import TrainConfig
from student_train.model.sandwich import S2DiT
from student_train.trainer import student_config_for

ROOT = Path(__file__).resolve().parents[2]
TEXT_DIM, TEXT_LEN, STEPS = 4096, 512, 40  # UMT5-XXL width, Wan's padded prompt length


def _a14b_latent_shape() -> tuple[int, int, int, int]:
    """The latent shape of configs/wan22_a14b.toml's videos through the Wan 2.2 VAE."""
    job = tomllib.loads((ROOT / "configs/wan22_a14b.toml").read_text())["job"]
    assert (job["frames"] - 1) % 4 == 0 and job["height"] % 16 == 0 and job["width"] % 16 == 0
    return 16, (job["frames"] - 1) // 4 + 1, job["height"] // 8, job["width"] // 8


def _student() -> S2DiT:
    layout = CacheLayout(latent_shape=_a14b_latent_shape(), num_steps=STEPS,
                         keep_steps=parse_keep_steps("uniform:8", STEPS), text_dim=TEXT_DIM,
                         max_text_len=TEXT_LEN)
    config = TrainConfig.load(str(ROOT / "configs/wan22_student_gpu.toml"))
    with torch.device("meta"):
        return S2DiT(student_config_for(layout, config.model))


def _inputs(batch: int, frames: int, model: S2DiT):
    cfg = model.config
    x = torch.randn(batch, cfg.latent_channels, frames, cfg.latent_height, cfg.latent_width,
                    device="meta")  # (B, 16, F, 60, 104)
    sigma, jump = torch.rand(batch, device="meta"), torch.rand(batch, device="meta")
    text = torch.randn(batch, TEXT_LEN, TEXT_DIM, device="meta")  # (B, 512, 4096)
    mask = torch.ones(batch, TEXT_LEN, dtype=torch.bool, device="meta")
    return x, sigma, jump, text, mask


def test_the_a14b_cache_shape_is_what_the_student_config_says():
    assert _a14b_latent_shape() == (16, 21, 60, 104)
    model = _student()
    assert model.config.grid == (21, 30, 52)  # 32,760 tokens a sample
    assert model.config.latent_frames % model.config.chunk_frames == 0  # 7 whole chunks


def test_both_stages_forward_and_backward_at_full_shape_on_meta():
    model = _student()
    for causal in (False, True):  # stage 1 (bidirectional), stage 2's causal phase and DMD
        x, sigma, jump, text, mask = _inputs(2, 21, model)
        out = model(x, sigma, jump, text, mask, causal=causal)
        assert out.shape == x.shape
        out.float().square().mean().backward()
        assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
        model.zero_grad(set_to_none=True)


def test_streaming_chunk_by_chunk_at_full_shape_on_meta():
    """Seven chunks of 3 latent frames, each committed into the SSA window's state (a commit is
    forward_chunk at sigma 0, d 0; commit_chunk itself branches on a value, which meta lacks)."""
    model = _student()
    chunk = model.config.chunk_frames
    x, sigma, jump, text, mask = _inputs(1, chunk, model)
    state = model.init_stream_state(1, device="meta")
    for _ in range(model.config.latent_frames // chunk):
        velocity, _ = model.forward_chunk(x, sigma, jump, text, mask, state)
        assert velocity.shape == x.shape
        zero = torch.zeros(1, device="meta")
        _, state = model.forward_chunk(x, zero, zero, text, mask, state)
    assert state.frame_offset.shape == ()


def test_flops_of_one_sample_are_counted_for_the_memory_plan():
    model = _student()
    x, sigma, jump, text, mask = _inputs(1, 21, model)
    with FlopCounterMode(display=False) as counter:
        model(x, sigma, jump, text, mask).float().square().mean().backward()
    tflop = counter.get_total_flops() / 1e12
    print(f"S2DiT at 16x21x60x104, dim {model.config.dim}: {tflop:.2f} TFLOP forward+backward a sample")
    assert 0.1 < tflop < 100  # a 384-d student on 32,760 tokens: about a TFLOP, not a PFLOP
