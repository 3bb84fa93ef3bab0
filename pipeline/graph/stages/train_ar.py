"""Stage train_ar: S2DiT-AR (stage 2) from the checkpoint of the training stage before it
(S2DiT-KD) on CACHE@TAG: a causal phase of teacher forcing on the cache, then DMD
self-forcing; into RUN_DIR/student_ar.

Reads ``[train_ar]`` (ARConfig keys; ``enabled = false`` skips stage 2); ``[run]
train_workers`` > 1 trains on Ray Train workers. Resumable like KD; its checkpoints are
numbered by causal + DMD steps."""

from __future__ import annotations

from typing import Any

from student_train.launch import Launched
from student_train.self_forcing import AR_STAGE, ARConfig

from ..config import RunConfig
from ..stage import StageContext
from ..state_schema import NUMBERS, optional
from .evaluate import Evaluation
from .training import register_training_stage, typed_section


def ar_config(config: RunConfig) -> ARConfig:
    """``[train_ar]`` as its typed config (bench/bench_memory.py reads the recipe so)."""
    return typed_section(ARConfig, config, AR_STAGE.table)


def _results(ctx: StageContext, config: ARConfig, done: Launched) -> dict[str, Any]:
    if done.phase_steps:
        ctx.console.print(f"steps per phase {done.phase_steps}; seconds this run "
                          f"{done.phase_seconds}")
    return {"causal_step": config.causal_steps, "dmd_step": config.steps,
            "phase_seconds": done.phase_seconds}


STAGE = register_training_stage(AR_STAGE, order=70, title="self-force S2DiT-AR (stage 2)",
                                results=_results, recorded={"phase_seconds": optional(NUMBERS)},
                                evaluation=Evaluation(order=80, title="score S2DiT-AR chunk by chunk"))
