"""What both training stages share: in process or on Ray Train workers, and the step check."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from student_train.checkpoint import latest_checkpoint
from student_train.config import StageConfig

from ..config import RunConfig, refuse_unknown_keys
from ..stage import StageContext

T = TypeVar("T", bound=StageConfig)


def typed_section(cls: type[T], config: RunConfig, name: str) -> T:
    """Section ``name`` as the training stage's typed config (keys and types checked)."""
    section: dict[str, Any] = config.section(name)
    refuse_unknown_keys(name, section, (f.name for f in dataclasses.fields(cls)))
    return cls.load(None, **section)


def workers(ctx: StageContext) -> tuple[int, int]:
    """(Ray Train workers, restarts allowed) from ``[run]``; 1 worker trains in this process."""
    run = ctx.config.run
    count, failures = int(run.get("train_workers", 1)), int(run.get("max_failures", 0))
    if count < 1 or failures < 0:
        raise ValueError(f"[run] train_workers must be >= 1 and max_failures >= 0, got {count}, {failures}")
    return count, failures


def finished_checkpoint(out: str, steps: int, what: str) -> str:
    """The newest checkpoint in ``out``, which must be the last step (else the run stopped)."""
    checkpoint = latest_checkpoint(out)
    step = int(checkpoint.rsplit("step_", 1)[1]) if checkpoint else 0
    if checkpoint is None or step < steps:
        raise RuntimeError(f"{what} stopped at step {step} of {steps} ({out}); rerun to resume")
    return checkpoint
