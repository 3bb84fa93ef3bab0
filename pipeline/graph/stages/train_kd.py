"""Stage train_kd: S2DiT-KD by 2-in-1 distillation on CACHE@TAG (stage 1) into RUN_DIR/student.

Reads ``[train]`` (TrainConfig keys); ``[run] train_workers`` > 1 trains on Ray Train workers.
Resumable: the trainer continues from the newest checkpoint in the same folder (model,
optimiser, loader position). Records step and train_seconds (the default results)."""

from __future__ import annotations

from student_train.config import TrainConfig
from student_train.trainer import KD_STAGE

from ..config import RunConfig
from .evaluate import Evaluation
from .training import register_training_stage, typed_section

# "student", not the default student_kd: the folder runs have always trained stage 1 into
STAGE = register_training_stage(KD_STAGE, order=50, title="train S2DiT-KD (stage 1)",
                                out="student", evaluation=Evaluation(order=60))


def train_config(config: RunConfig) -> TrainConfig:
    """``[train]`` as its typed config (bench/bench_memory.py reads the recipe so)."""
    return typed_section(TrainConfig, config, KD_STAGE.table)
