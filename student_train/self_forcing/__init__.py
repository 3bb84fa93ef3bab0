"""Stage 2 of DESIGN 6: self-forcing turns S2DiT-KD into the streaming few-step S2DiT-AR.

config (ARConfig, TOML [train_ar]), source (the KD checkpoint and its fit to the cache), batch
(cached noise / x0 / text and keyed per-row draws), rollout (chunk-by-chunk generation with a
gradient at the exit step), losses (DMD, critic flow matching, trajectory regression), trainer.
"""

from .config import ARConfig
from .rollout import exit_steps, rollout
from .trainer import AR_STAGE, ARTrainer

__all__ = ["AR_STAGE", "ARConfig", "ARTrainer", "exit_steps", "rollout"]
