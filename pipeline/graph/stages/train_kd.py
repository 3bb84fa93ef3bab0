"""Stage train_kd: S2DiT-KD by 2-in-1 distillation on CACHE@TAG (stage 1) into RUN_DIR/student.

Reads ``[train]`` (TrainConfig keys). Resumable: the trainer continues from the newest
checkpoint in the same folder (model, optimiser, loader position)."""

from __future__ import annotations

from typing import Any

from student_train.checkpoint import latest_checkpoint
from student_train.config import TrainConfig
from student_train.trainer import Trainer

from ..stage import Stage, StageContext


def train_config(ctx: StageContext) -> TrainConfig:
    return TrainConfig.load(None, **ctx.config.section("train"))


def run(ctx: StageContext) -> dict[str, Any]:
    config, out = train_config(ctx), ctx.path("student")
    trainer = Trainer(ctx.outputs("tag")["cache_url"], out, config)
    if trainer.resumed_from:
        ctx.console.print(f"resuming from {trainer.resumed_from} (step {trainer.step} of {config.steps})")
    trainer.run(progress=ctx.progress)
    checkpoint = latest_checkpoint(out)
    if checkpoint is None or trainer.step < config.steps:
        raise RuntimeError(f"S2DiT-KD stopped at step {trainer.step} of {config.steps} ({out})")
    return {"out": out, "checkpoint": checkpoint, "step": trainer.step,
            "train_seconds": round(getattr(trainer, "train_seconds", 0.0), 3)}


STAGE = Stage(name="train_kd", title="train S2DiT-KD (stage 1)", section="train", run=run,
              needs=("tag",), writes=("student",), resumable=True)
