"""The training stages, keyed by the name configs and checkpoints carry (one ``Registry``).

The one place that lists the built-in stages; everything else asks ``get_stage(name)``,
``stage_names()`` or ``stage_of_checkpoint(state)``. A new stage is its own module (config,
trainer, ``TrainingStage``) plus one ``register_stage`` call.
"""

from __future__ import annotations

from typing import Any

from cache_schema.registry import Registry

from .checkpoint import checkpoint_stage
from .self_forcing import AR_STAGE
from .stage_spec import TrainingStage
from .trainer import KD_STAGE

STAGES: Registry[TrainingStage] = Registry(
    "training stage", what="a config or a checkpoint",
    hint="a new stage is registered with student_train.stages.register_stage",
    describe=lambda stage: stage.title)


def register_stage(stage: TrainingStage, *, replace: bool = False) -> TrainingStage:
    """Add ``stage`` under ``stage.name``; its checkpoint stage names must be its own."""
    if not isinstance(stage, TrainingStage):
        raise TypeError(f"register_stage takes a TrainingStage, got {stage!r}")
    for other in STAGES.values():
        shared = set(other.checkpoints) & set(stage.checkpoints)
        if shared and other.name != stage.name:
            raise ValueError(f"training stage {stage.name!r}: checkpoint stage(s) {sorted(shared)} "
                             f"already belong to {other.name!r}")
    return STAGES.register(stage.name, stage, replace=replace)


def get_stage(name: str) -> TrainingStage:
    return STAGES.get(name)


def stage_names() -> tuple[str, ...]:
    return STAGES.names()


def stage_of_checkpoint(state: dict[str, Any]) -> TrainingStage:
    """The stage that wrote a checkpoint (its ``state.json``)."""
    name = checkpoint_stage(state)
    for stage in STAGES.values():
        if name in stage.checkpoints:
            return stage
    raise STAGES.unknown(f"checkpoint of stage {name!r}, which no registered training stage "
                         f"writes (registered: {', '.join(STAGES.names())})")


for _builtin in (KD_STAGE, AR_STAGE):
    register_stage(_builtin)
