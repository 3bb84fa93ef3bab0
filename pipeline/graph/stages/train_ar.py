"""Stage train_ar: S2DiT-AR (stage 2) from the S2DiT-KD checkpoint on CACHE@TAG: a causal phase
of teacher forcing on the cache, then DMD self-forcing; into RUN_DIR/student_ar.

Reads ``[train_ar]`` (ARConfig keys; ``enabled = false`` skips stage 2); ``[run]
train_workers`` > 1 trains on Ray Train workers. Resumable like KD."""

from __future__ import annotations

from typing import Any

from student_train.launch import launch
from student_train.self_forcing import ARConfig

from ..config import RunConfig
from ..stage import Stage, StageContext
from ..state_schema import NUMBERS, optional
from .training import (
    RECORDED,
    checkpoint_intact,
    finished_checkpoint,
    tensors_sha256,
    typed_section,
    workers,
)


def ar_config(config: RunConfig) -> ARConfig:
    return typed_section(ARConfig, config, "train_ar")


def run(ctx: StageContext) -> dict[str, Any]:
    config, out = ar_config(ctx.config), ctx.path("student_ar")
    init, cache = ctx.outputs("train_kd")["checkpoint"], ctx.outputs("tag")["cache_url"]
    count, failures = workers(ctx)
    done = launch("ar", config, count, out_url=out, init_url=init, cache_url=cache,
                  max_failures=failures, progress=ctx.progress, log=ctx.console.print)
    if done.phase_steps:
        ctx.console.print(f"steps per phase {done.phase_steps}; seconds this run "
                          f"{done.phase_seconds}")
    # checkpoints are numbered by causal + DMD steps
    checkpoint = finished_checkpoint(out, config.causal_steps + config.steps, "S2DiT-AR")
    return {"out": out, "checkpoint": checkpoint, "tensors_sha256": tensors_sha256(checkpoint),
            "causal_step": config.causal_steps,
            "dmd_step": config.steps, "phase_seconds": done.phase_seconds, "workers": count}


STAGE = Stage(name="train_ar", title="self-force S2DiT-AR (stage 2)", section="train_ar", run=run,
              seeded=True, artefact="student_ar/metrics.jsonl",
              needs=("train_kd", "tag"), writes=("student_ar",), resumable=True,
              check=ar_config,
              still_there=checkpoint_intact, recorded={**RECORDED, "phase_seconds": optional(NUMBERS)})
