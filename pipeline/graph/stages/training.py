"""What the training stages share: the run-graph stage itself (``training_stage``: launch in
process or on Ray Train workers, the step check, what it records of its checkpoint and the check
of it before calling it up to date); a stage module supplies its section, config and inputs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import fsspec

from student_train.checkpoint import STATE, TENSORS, finished_checkpoint
from student_train.config import StageConfig
from student_train.launch import Launched, launch
from student_train.stages import get_stage

from ..config import RunConfig, refuse_unknown_keys
from ..stage import Stage, StageContext
from ..state_schema import PATH, STR, optional

# What a training stage records of its result (its checkpoint, and the digest of its tensors)
RECORDED = {"out": PATH, "checkpoint": PATH, "tensors_sha256": optional(STR)}
MAX_CHECKPOINT_STATE = 64 << 20

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


def tensors_sha256(checkpoint: str) -> str:
    """The sha256 of a checkpoint's tensors, as its state.json records it ("" if it has none)."""
    fs, root = fsspec.core.url_to_fs(f"{checkpoint}/{STATE}")
    if fs.size(root) > MAX_CHECKPOINT_STATE:
        return ""
    return str(json.loads(fs.cat_file(root)).get("tensors_sha256", ""))


def checkpoint_intact(ctx: StageContext, outputs: dict[str, Any]) -> bool:
    """The recorded checkpoint still holds its tensors and state, and they are the ones
    recorded: a deleted or replaced checkpoint makes its stage rerun, not up to date."""
    del ctx
    checkpoint = outputs["checkpoint"]
    fs, root = fsspec.core.url_to_fs(checkpoint)
    if not (fs.isfile(f"{root}/{TENSORS}") and fs.isfile(f"{root}/{STATE}")):
        return False
    if "tensors_sha256" not in outputs:  # recorded by an earlier s2dit
        return True
    try:
        return tensors_sha256(checkpoint) == outputs["tensors_sha256"]
    except (OSError, ValueError):  # an unreadable state.json: not the recorded checkpoint
        return False


# (the stage's context, its typed config, what launch did) -> the outputs a stage adds to
# out, checkpoint and tensors_sha256 (recorded in this order, then ``workers``)
Results = Callable[[StageContext, Any, Launched], dict[str, Any]]


def training_stage(trainer: str, *, name: str, title: str, section: str,
                   config: Callable[[RunConfig], StageConfig], out: str, needs: tuple[str, ...],
                   inputs: Callable[[StageContext], dict[str, str]], results: Results,
                   recorded: Mapping[str, str] | None = None) -> Stage:
    """The run-graph stage that trains the registered training stage ``trainer`` into the run
    folder's ``out`` from ``inputs(ctx)`` (the URLs its spec trains from) with ``config``
    (section ``section`` read as its typed config). Resumable: the trainer continues from the
    newest checkpoint in ``out`` (model, optimiser, loader position)."""
    spec = get_stage(trainer)

    def run(ctx: StageContext) -> dict[str, Any]:
        typed, folder, urls = config(ctx.config), ctx.path(out), inputs(ctx)
        count, failures = workers(ctx)
        done = launch(trainer, typed, count, out_url=folder, max_failures=failures,
                      progress=ctx.progress, log=ctx.console.print, **urls)
        own = results(ctx, typed, done)
        checkpoint = finished_checkpoint(folder, spec.total_steps(typed), spec.title)
        return {"out": folder, "checkpoint": checkpoint,
                "tensors_sha256": tensors_sha256(checkpoint), **own, "workers": count}

    return Stage(name=name, title=title, section=section, run=run, seeded=True,
                 artefact=f"{out}/metrics.jsonl", needs=needs, writes=(out,), resumable=True,
                 check=config, still_there=checkpoint_intact,
                 recorded={**RECORDED, **(recorded or {})})
