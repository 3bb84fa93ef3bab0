"""Typed configuration of stage 2 (self-forcing -> S2DiT-AR); TOML ``[train_ar]`` in, resolved
JSON next to every checkpoint. The fields every stage has are ``StageConfig``'s (config.py);
this adds stage 2's and restates the defaults its recipe needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import StageConfig


@dataclass(kw_only=True, slots=True)
class ARConfig(StageConfig):
    TABLE: ClassVar[str] = "train_ar"
    TABLE_REQUIRED: ClassVar[bool] = True
    EXAMPLE: ClassVar[str] = "configs/ar_demo.toml"

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
    causal_jump_first_chunk: bool = False  # chunk 0's jump targets blend modes (see causal.py)
    causal_sigma_shift: float = 3.0  # flow-matching sigma draw (the teacher's shift)
    # Rollout.
    chunk_frames: int | None = None  # latent frames per chunk (None: the KD model's config)
    context_sigma: float = 0.0  # noise level a finished chunk is committed at (0: clean)
    exit_per_chunk: bool = False  # one exit step per chunk instead of one per rollout

    def __post_init__(self) -> None:
        StageConfig.__post_init__(self)  # (zero-argument super() fails in slotted dataclasses)
        if self.critic_steps < 0 or self.causal_steps < 0:
            raise ValueError("steps, causal_steps and critic_steps must be >= 0, batch_size >= 1")
        if self.steps + self.causal_steps < 1:
            raise ValueError("nothing to train: steps and causal_steps are both 0")
        if self.dmd_sigma_shift <= 0 or self.causal_sigma_shift <= 0:
            raise ValueError("sigma shifts must be > 0")
        if not 0.0 <= self.causal_jump_fraction <= 1.0:
            raise ValueError(f"causal_jump_fraction must be in [0, 1], got {self.causal_jump_fraction}")
        if not 0.0 < self.dmd_sigma_min <= self.dmd_sigma_max < 1.0:
            raise ValueError(f"need 0 < dmd_sigma_min <= dmd_sigma_max < 1, got "
                             f"{self.dmd_sigma_min}, {self.dmd_sigma_max}")
        if not 0.0 <= self.context_sigma < 1.0:
            raise ValueError(f"context_sigma must be in [0, 1), got {self.context_sigma}")
        if self.critic_warmup_steps and not self.critic_steps:
            raise ValueError("critic_warmup_steps needs critic_steps >= 1")
