"""Tiny random-weight Wan modules built from config with the real diffusers/transformers
classes (PLATFORM-NOTES): for tests and the offline demo, since no weights can be downloaded.
One tiny form per checkpoint kind the Wan teacher runs (A14B, Wan 2.1, TI2V-5B)."""

from __future__ import annotations

import torch


def train_tokenizer(vocab_size: int = 256):
    """A BPE tokenizer trained in process, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    words = ["a", "the", "red", "green", "blue", "square", "ring", "cross", "bar", "moving", "left", "right", "up", "down", "astronaut", "running", "through", "alley", "city", "night", "rain", "cat", "dog", "car", "street", "ocean", "wave", "slow", "fast", "camera", "pan", "zoom", "blurry", "low", "quality"]
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size,
                                                        special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


VARIANTS = ("t2v-a14b", "t2v-2.1", "ti2v-5b")  # the WanPipeline forms a teacher can take
# The experts' arguments but the channels (PLATFORM-NOTES): rope_max_seq_len bounds the latent
# patches per axis, so tiny_configs (the sizes the tiny teacher accepts) reads it from here.
EXPERT = {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 12,
          "text_dim": 32, "freq_dim": 32, "ffn_dim": 64, "num_layers": 2, "cross_attn_norm": True,
          "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 32}


def tiny_configs(variant: str = "t2v-a14b") -> dict[str, dict]:
    """The geometry part of the tiny pipeline's configs, without building it (wan_limits)."""
    if variant not in VARIANTS:
        raise ValueError(f"tiny Wan variant must be one of {VARIANTS}, got {variant!r}")
    spatial = 16 if variant == "ti2v-5b" else 8
    return {"transformer": dict(EXPERT), "vae": {"scale_factor_spatial": spatial,
                                                 "scale_factor_temporal": 4}}


def build_tiny_pipeline(seed: int = 0, shift: float = 3.0, variant: str = "t2v-a14b"):
    """A WanPipeline with tiny random weights, in the form of one real checkpoint kind:
    ``t2v-a14b`` two experts split at boundary_ratio 0.875 (Wan 2.2 T2V-A14B); ``t2v-2.1`` one
    transformer, 16-channel VAE (Wan 2.1 T2V); ``ti2v-5b`` one transformer, 48-channel residual
    VAE with 2x2 patchify (16x spatial) and one timestep per token (Wan 2.2 TI2V-5B,
    ``expand_timesteps``)."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    if variant not in VARIANTS:
        raise ValueError(f"tiny Wan variant must be one of {VARIANTS}, got {variant!r}")
    tokenizer = train_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id))
    if variant == "ti2v-5b":  # the Wan 2.2 VAE: 48 channels, residual, patchified by 2
        z_dim = 48
        vae = AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=z_dim, dim_mult=[1, 2, 2, 2],
                               num_res_blocks=1, attn_scales=[], temperal_downsample=[False, True, True],
                               is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                               scale_factor_spatial=16, latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
    else:
        z_dim = 16
        vae = AutoencoderKLWan(base_dim=8, z_dim=z_dim, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                               attn_scales=[], temperal_downsample=[False, True, True],
                               latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)

    def expert(expert_seed: int):
        torch.manual_seed(expert_seed)
        return WanTransformer3DModel(in_channels=z_dim, out_channels=z_dim, **EXPERT).eval()

    two = variant == "t2v-a14b"
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae.eval(),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
                       transformer=expert(seed + 1), transformer_2=expert(seed + 2) if two else None,
                       boundary_ratio=0.875 if two else None, expand_timesteps=variant == "ti2v-5b")
