"""Stage train_kd: S2DiT-KD by 2-in-1 distillation on CACHE@TAG (stage 1) into RUN_DIR/student.

Reads ``[train]`` (TrainConfig keys); ``[run] train_workers`` > 1 trains on Ray Train workers.
Resumable: the trainer continues from the newest checkpoint in the same folder (model,
optimiser, loader position)."""

from __future__ import annotations

from typing import Any

from student_train.config import TrainConfig
from student_train.launch import Launched

from ..config import RunConfig
from ..registry import register_graph_stage
from ..stage import StageContext
from .training import training_stage, typed_section


def train_config(config: RunConfig) -> TrainConfig:
    return typed_section(TrainConfig, config, "train")


def _results(ctx: StageContext, config: TrainConfig, done: Launched) -> dict[str, Any]:
    del ctx
    return {"step": config.steps, "train_seconds": done.train_seconds}


STAGE = training_stage("kd", name="train_kd", title="train S2DiT-KD (stage 1)", section="train",
                       config=train_config, out="student", needs=("tag",),
                       inputs=lambda ctx: {"cache_url": ctx.outputs("tag")["cache_url"]},
                       results=_results)
register_graph_stage(STAGE, order=50)
