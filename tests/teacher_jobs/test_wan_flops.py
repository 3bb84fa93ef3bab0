"""The plan's FLOPs formula (wan_plan.forward_flops, the input of the calibrated cost model)
against torch's own FLOP counter on the real diffusers transformer (issue 27: cross-attention
keys and values were counted over the video tokens instead of the 512 text tokens, +8%)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from teacher_jobs.teachers.wan_plan import TEXT_TOKENS, forward_flops, shipped_configs


def _counted(config: dict, latent_shape: tuple[int, int, int, int]) -> tuple[int, int]:
    """(all FLOPs of the transformer blocks, their self-attention score/value FLOPs), counted
    by torch on the meta device (no memory, no weights) with the math attention backend, whose
    matmuls the counter sees (the fused CPU kernel is not counted)."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(config)
        model.set_attention_backend("_native_math")
        x = torch.randn(1, *latent_shape)  # (B, C, F, H, W)
        text = torch.randn(1, TEXT_TOKENS, config["text_dim"])  # (B, 512, text_dim): padded UMT5
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(hidden_states=x, timestep=torch.tensor([500]), encoder_hidden_states=text)
    counts = counter.get_flop_counts()
    blocks = [name for name in counts if name.count(".") == 2 and ".blocks." in name]
    total = sum(sum(counts[name].values()) for name in blocks)
    self_attention = sum(v for name in blocks for op, v in counts[f"{name}.attn1"].items()
                         if "bmm" in str(op))  # q k^T and p v; the projections are addmm
    return total, self_attention


def test_forward_flops_equal_torchs_count_on_the_a14b_architecture():
    """A14B's own dimensions (two of its 40 identical layers; the full model at the shipped
    16x21x60x104 latent also matches, 1.678e15 FLOPs a forward, but takes seconds): the formula
    equals the counter exactly, linear part and self-attention part alike."""
    config = {**shipped_configs("t2v-a14b")["transformer"], "num_layers": 2}
    shape = (16, 6, 20, 26)
    linear, attention = forward_flops(config, shape)
    total, self_attention = _counted(config, shape)
    assert attention == self_attention
    assert linear + attention == total


def test_cross_attention_keys_and_values_are_counted_over_the_text_tokens():
    """Few video tokens and 512 text tokens: the text K/V projections dominate the linear part,
    so counting them per video token (the old formula) is far off."""
    config = {**shipped_configs("t2v-a14b")["transformer"], "num_layers": 1}
    shape = (16, 1, 4, 4)  # 4 video tokens
    linear, attention = forward_flops(config, shape)
    assert linear + attention == _counted(config, shape)[0]
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    text_kv = 2 * TEXT_TOKENS * 2 * dim * dim
    assert text_kv > 0.5 * linear
