"""A training stage as one spec (torchtitan's ``TrainSpec``): everything the rest of the
project needs to train, resume, checkpoint and sample it, so no caller tests a stage name.

A stage's own module builds its ``TrainingStage`` and ``stages.register_stage`` adds it to the
registry keyed by ``name``; ``launch`` runs it in process or on Ray Train, and
``StudentCheckpoint`` samples what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import StageConfig

if TYPE_CHECKING:
    from .loop import TrainLoop


def clean_context(config: dict[str, Any]) -> float:
    """A stage that never commits chunks at a noise level: finished chunks are clean context."""
    del config
    return 0.0


def configured_context(config: dict[str, Any]) -> float:
    """The ``context_sigma`` of the checkpoint's resolved config (0 when it has none)."""
    return float(config.get("context_sigma", 0.0))


def configured_dropout(state: dict[str, Any]) -> float:
    """The ``cond_dropout`` of the checkpoint's resolved config (0 for a checkpoint written
    before the setting existed): the share of rows trained on the unconditional embedding."""
    return float(state.get("config", {}).get("cond_dropout", 0.0))


def configured_steps(config: Any) -> int:
    return int(config.steps)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainingStage:
    name: str  # registry key, and the stage name its checkpoints carry when it has one phase
    title: str  # the model it trains, for people ("S2DiT-KD")
    config: type[StageConfig]  # its typed config; config.TABLE is its TOML table
    # (config, out_url, *, rank, world_size, [wrap_model], **inputs) -> its loop, resumed
    build: Callable[..., TrainLoop]
    inputs: tuple[str, ...]  # the URLs it trains from, as keywords of ``build``
    # Stage names its checkpoints carry (it resumes any of them); the last is the finished one
    checkpoints: tuple[str, ...]
    # Under Ray Train: DDP-wrap the model (``wrap_model``), or the trainer averages gradients
    ddp: bool = False
    # Of ``checkpoints``, those sampled chunk by chunk (streaming) unless a caller says otherwise
    streams: tuple[str, ...] = ()
    # The noise level finished chunks are committed at when streaming, from the checkpoint's
    # resolved config (streaming sampling must commit as training did)
    context_sigma: Callable[[dict[str, Any]], float] = clean_context
    # Optimiser steps of a whole run (checkpoints are numbered by it)
    total_steps: Callable[[Any], int] = configured_steps
    # The conditioning dropout a checkpoint's model was trained with, from its state.json
    # (0: it has no unconditional mode, and sampling it with guidance != 1 is refused)
    cond_dropout: Callable[[dict[str, Any]], float] = configured_dropout

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ValueError(f"training stage {self.name!r} names no checkpoint stage")
        stray = sorted(set(self.streams) - set(self.checkpoints))
        if stray:
            raise ValueError(f"training stage {self.name!r}: streams {stray} are not among its "
                             f"checkpoint stages {list(self.checkpoints)}")

    @property
    def table(self) -> str:
        return self.config.TABLE

    @property
    def finished_streams(self) -> bool:
        """Whether its finished checkpoint (the last of ``checkpoints``) samples chunk by chunk."""
        return self.checkpoints[-1] in self.streams


def planned_dropout(stages: Iterable[tuple[TrainingStage, StageConfig]]) -> float:
    """The conditioning dropout the model of the last of ``stages`` (trained in this order, a
    stage that starts from a trained student starting from the one before it) will have been
    trained with, as far as their configs tell: each stage's ``cond_dropout`` reads the state
    its checkpoint will carry, its resolved config and, under ``init``, the dropout of the model
    it starts from (what self-forcing records of its KD source). It lets a run config refuse
    guidance before anything trains; the finished checkpoint's own state stays the authority."""
    dropout = 0.0
    for spec, config in stages:
        init = {"cond_dropout": dropout} if dropout else {}
        dropout = spec.cond_dropout({"config": config.to_json(), "init": init})
    return dropout
