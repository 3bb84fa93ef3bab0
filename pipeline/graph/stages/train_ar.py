"""Stage train_ar: S2DiT-AR (stage 2) from the S2DiT-KD checkpoint on CACHE@TAG: a causal phase
of teacher forcing on the cache, then DMD self-forcing; into RUN_DIR/student_ar.

Reads ``[train_ar]`` (ARConfig keys; ``enabled = false`` skips stage 2); ``[run]
train_workers`` > 1 trains on Ray Train workers. Resumable like KD."""

from __future__ import annotations

from typing import Any

from student_train.self_forcing import ARConfig, ARTrainer

from ..config import RunConfig
from ..stage import Stage, StageContext
from .training import finished_checkpoint, workers


def ar_config(config: RunConfig) -> ARConfig:
    return ARConfig.load(None, **config.section("train_ar"))


def run(ctx: StageContext) -> dict[str, Any]:
    config, out = ar_config(ctx.config), ctx.path("student_ar")
    init, cache = ctx.outputs("train_kd")["checkpoint"], ctx.outputs("tag")["cache_url"]
    count, failures = workers(ctx)
    phases: dict[str, float] = {}
    if count > 1:
        from student_train.distributed import train_ar_ray

        train_ar_ray(init, cache, out, config, workers=count, max_failures=failures,
                     progress=ctx.progress)
    else:
        trainer = ARTrainer(init, cache, out, config)
        trainer.run(progress=ctx.progress)
        phases = {k: round(v, 3) for k, v in getattr(trainer, "phase_seconds", {}).items()}
        ctx.console.print(f"causal phase {trainer.causal_step} steps, DMD {trainer.step} steps; "
                          f"seconds this run {phases}")
    # checkpoints are numbered by causal + DMD steps
    checkpoint = finished_checkpoint(out, config.causal_steps + config.steps, "S2DiT-AR")
    return {"out": out, "checkpoint": checkpoint, "causal_step": config.causal_steps,
            "dmd_step": config.steps, "phase_seconds": phases, "workers": count}


STAGE = Stage(name="train_ar", title="self-force S2DiT-AR (stage 2)", section="train_ar", run=run,
              needs=("train_kd", "tag"), writes=("student_ar",), resumable=True,
              check=ar_config)
