"""Stage train_ar: S2DiT-AR (stage 2) from the S2DiT-KD checkpoint on CACHE@TAG: a causal phase
of teacher forcing on the cache, then DMD self-forcing; into RUN_DIR/student_ar.

Reads ``[train_ar]`` (ARConfig keys; ``enabled = false`` skips stage 2). Resumable like KD."""

from __future__ import annotations

from typing import Any

from student_train.checkpoint import latest_checkpoint
from student_train.self_forcing import ARConfig, ARTrainer

from ..stage import Stage, StageContext


def ar_config(ctx: StageContext) -> ARConfig:
    return ARConfig.load(None, **ctx.config.section("train_ar"))


def run(ctx: StageContext) -> dict[str, Any]:
    config, out = ar_config(ctx), ctx.path("student_ar")
    trainer = ARTrainer(ctx.outputs("train_kd")["checkpoint"], ctx.outputs("tag")["cache_url"], out, config)
    trainer.run(progress=ctx.progress)
    checkpoint = latest_checkpoint(out)
    done = (trainer.causal_step, trainer.step)
    if checkpoint is None or done[0] < config.causal_steps or done[1] < config.steps:
        raise RuntimeError(f"S2DiT-AR stopped at causal step {done[0]} of {config.causal_steps}, "
                           f"DMD step {done[1]} of {config.steps} ({out})")
    phases = {k: round(v, 3) for k, v in getattr(trainer, "phase_seconds", {}).items()}
    ctx.console.print(f"causal phase {trainer.causal_step} steps, DMD {trainer.step} steps; "
                      f"seconds this run {phases}")
    return {"out": out, "checkpoint": checkpoint, "causal_step": trainer.causal_step,
            "dmd_step": trainer.step, "phase_seconds": phases}


STAGE = Stage(name="train_ar", title="self-force S2DiT-AR (stage 2)", section="train_ar", run=run,
              needs=("train_kd", "tag"), writes=("student_ar",), resumable=True)
