"""Stage train_ar: S2DiT-AR (stage 2) from the S2DiT-KD checkpoint on CACHE@TAG: a causal phase
of teacher forcing on the cache, then DMD self-forcing; into RUN_DIR/student_ar.

Reads ``[train_ar]`` (ARConfig keys; ``enabled = false`` skips stage 2); ``[run]
train_workers`` > 1 trains on Ray Train workers. Resumable like KD; its checkpoints are
numbered by causal + DMD steps."""

from __future__ import annotations

from typing import Any

from student_train.launch import Launched
from student_train.self_forcing import ARConfig

from ..config import RunConfig
from ..registry import register_graph_stage
from ..stage import StageContext
from ..state_schema import NUMBERS, optional
from .training import training_stage, typed_section


def ar_config(config: RunConfig) -> ARConfig:
    return typed_section(ARConfig, config, "train_ar")


def _inputs(ctx: StageContext) -> dict[str, str]:
    return {"init_url": ctx.outputs("train_kd")["checkpoint"],
            "cache_url": ctx.outputs("tag")["cache_url"]}


def _results(ctx: StageContext, config: ARConfig, done: Launched) -> dict[str, Any]:
    if done.phase_steps:
        ctx.console.print(f"steps per phase {done.phase_steps}; seconds this run "
                          f"{done.phase_seconds}")
    return {"causal_step": config.causal_steps, "dmd_step": config.steps,
            "phase_seconds": done.phase_seconds}


STAGE = training_stage("ar", name="train_ar", title="self-force S2DiT-AR (stage 2)",
                       section="train_ar", config=ar_config, out="student_ar",
                       needs=("train_kd", "tag"), inputs=_inputs, results=_results,
                       recorded={"phase_seconds": optional(NUMBERS)})
register_graph_stage(STAGE, order=70)
