"""Stage train_kd: S2DiT-KD by 2-in-1 distillation on CACHE@TAG (stage 1) into RUN_DIR/student.

Reads ``[train]`` (TrainConfig keys); ``[run] train_workers`` > 1 trains on Ray Train workers.
Resumable: the trainer continues from the newest checkpoint in the same folder (model,
optimiser, loader position)."""

from __future__ import annotations

from typing import Any

from student_train.config import TrainConfig
from student_train.launch import launch

from ..config import RunConfig
from ..stage import Stage, StageContext
from .training import (
    RECORDED,
    checkpoint_intact,
    finished_checkpoint,
    tensors_sha256,
    typed_section,
    workers,
)


def train_config(config: RunConfig) -> TrainConfig:
    return typed_section(TrainConfig, config, "train")


def run(ctx: StageContext) -> dict[str, Any]:
    config, out, cache = train_config(ctx.config), ctx.path("student"), ctx.outputs("tag")["cache_url"]
    count, failures = workers(ctx)
    done = launch("kd", config, count, out_url=out, cache_url=cache, max_failures=failures,
                  progress=ctx.progress, log=ctx.console.print)
    checkpoint = finished_checkpoint(out, config.steps, "S2DiT-KD")
    return {"out": out, "checkpoint": checkpoint, "tensors_sha256": tensors_sha256(checkpoint),
            "step": config.steps,
            "train_seconds": done.train_seconds, "workers": count}


STAGE = Stage(name="train_kd", title="train S2DiT-KD (stage 1)", section="train", run=run,
              seeded=True, artefact="student/metrics.jsonl",
              needs=("tag",), writes=("student",), resumable=True,
              check=train_config,
              still_there=checkpoint_intact, recorded={**RECORDED})
