"""Learning-rate schedule of both training stages: linear warm-up, then cosine decay to
``lr * min_lr_ratio`` (1.0: constant after warm-up)."""

from __future__ import annotations

import math


def lr_factor(step: int, cfg) -> float:
    """cfg: TrainConfig or ARConfig (warmup_steps, steps, min_lr_ratio)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
