"""Typed configuration of stage 2 (self-forcing -> S2DiT-AR); TOML ``[train_ar]`` in, resolved
JSON next to every checkpoint. The fields every stage has are ``StageConfig``'s (config.py);
this adds stage 2's and restates the defaults its recipe needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cache_schema.typed_config import Limits, between

from ..config import BETAS, RATE, STEPS, WEIGHT, StageConfig

SIGMA = between(0.0, 1.0, lo_open=True, hi_open=True)
SHIFT = between(0.0, 1000.0, lo_open=True)


@dataclass(kw_only=True, slots=True)
class ARConfig(StageConfig):
    TABLE: ClassVar[str] = "train_ar"
    TABLE_REQUIRED: ClassVar[bool] = True
    EXAMPLE: ClassVar[str] = "configs/ar_demo.toml"
    LIMITS: ClassVar[Limits] = {
        "critic_lr": RATE, "critic_betas": BETAS, "critic_grad_clip": between(0.0, 1e6, lo_open=True),
        "critic_steps": between(0, 1000), "critic_warmup_steps": STEPS, "dmd_weight": WEIGHT,
        "regression_weight": WEIGHT, "dmd_sigma_min": SIGMA, "dmd_sigma_max": SIGMA,
        "dmd_sigma_shift": SHIFT, "causal_steps": STEPS, "causal_lr": RATE, "causal_betas": BETAS,
        "causal_batch_size": between(1, 1_000_000), "causal_jump_fraction": between(0.0, 1.0),
        "causal_sigma_shift": SHIFT, "chunk_frames": between(1, 4096),
        "context_sigma": between(0.0, 1.0, hi_open=True),
    }

    # Stage 2's values of shared fields.
    steps: int = 300  # DMD generator steps (after causal_steps)
    batch_size: int = 16  # streaming rollouts per generator step
    # Generator (the block-causal student). Few-step DMD generators are trained with a small lr
    # and beta1 = 0 in DMD2 / Self-Forcing: the critic moves under the generator every step.
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 20
    min_lr_ratio: float = 1.0  # constant after warm-up
    ema_decay: float = 0.99
    checkpoint_every: int = 100
    # Critic (the fake score), trained online with flow matching on detached generated samples.
    critic_lr: float = 2e-4
    critic_betas: tuple[float, float] = (0.0, 0.99)
    critic_grad_clip: float = 1.0
    critic_steps: int = 1  # critic updates per generator step (the first reuses its samples)
    critic_warmup_steps: int = 0  # first steps update the critic only (generator frozen)
    # Losses.
    dmd_weight: float = 1.0  # distribution matching: real score = frozen S2DiT-KD (EMA), d = 0
    regression_weight: float = 1.0  # rollout from the cached noise -> the cached x0
    dmd_sigma_min: float = 0.02  # re-noising levels of the DMD and critic losses
    dmd_sigma_max: float = 0.98
    # 1: uniform on [min, max]; > 1: Self-Forcing's shifted draw s u / (1 + (s - 1) u), clamped
    dmd_sigma_shift: float = 1.0
    # Causal phase (causal.py), run first: teacher forcing on the cache's clean videos.
    causal_steps: int = 0  # 0: none, DMD starts from the bidirectional KD model
    causal_lr: float = 3e-4
    causal_betas: tuple[float, float] = (0.9, 0.99)
    causal_batch_size: int | None = None  # None: batch_size
    causal_jump_fraction: float = 0.5  # share of chunk rows with a cached d > 0 jump target
    # chunk 0's jump targets from the cached bidirectional states blend modes (causal.py); a
    # cache with causal ODE pairs gives every chunk, chunk 0 included, jumps from them instead
    causal_jump_first_chunk: bool = False
    # false: ignore a cache's causal ODE pairs and learn the jumps from its bidirectional states,
    # as on a cache without them (same draws and data order: the pairs-or-not ablation)
    use_causal_pairs: bool = True
    causal_sigma_shift: float = 3.0  # flow-matching sigma draw (the teacher's shift)
    # Rollout.
    chunk_frames: int | None = None  # latent frames per chunk (None: the KD model's config)
    context_sigma: float = 0.0  # noise level a finished chunk is committed at (0: clean)
    exit_per_chunk: bool = False  # one exit step per chunk instead of one per rollout

    def __post_init__(self) -> None:
        StageConfig.__post_init__(self)  # types and ranges (LIMITS) of every field
        if self.steps + self.causal_steps < 1:
            raise ValueError("[train_ar] nothing to train: steps and causal_steps are both 0")
        if self.dmd_sigma_min > self.dmd_sigma_max:
            raise ValueError(f"[train_ar] dmd_sigma_min = {self.dmd_sigma_min} is above "
                             f"dmd_sigma_max = {self.dmd_sigma_max}: need min <= max")
        if self.critic_warmup_steps and not self.critic_steps:
            raise ValueError("critic_warmup_steps needs critic_steps >= 1")
