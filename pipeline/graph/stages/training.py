"""A training stage of the run graph, from its spec in one call (``register_training_stage``).

The spec (student_train.stage_spec.TrainingStage) says what the graph needs: its config class
(whose TOML table is the stage's section), the URLs it trains from and how many steps it takes.
From it this module derives the graph stage ``train_<name>``: it launches in process or on Ray
Train workers, trains from the tagged cache (``cache_url``) and, when it starts from a trained
student (``init_url``), from the checkpoint of the training stage placed before it; it records
its checkpoint and checks it before calling the stage up to date; it is resumable. Passed
``evaluation=``, the same call places its eval stage ``eval_<name>`` (evaluate.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import fsspec

from student_train.checkpoint import STATE, TENSORS, finished_checkpoint
from student_train.config import StageConfig
from student_train.launch import Launched, launch
from student_train.stage_spec import TrainingStage, planned_dropout
from student_train.stages import STAGES as TRAINERS
from student_train.stages import get_stage, register_stage

from ..changes import Continues
from ..config import RunConfig, refuse_unknown_keys
from ..registry import GRAPH_STAGES, register_graph_builder, unregister_graph_stage
from ..stage import Stage, StageContext
from ..state_schema import PATH, STR, optional
from .evaluate import PREFIX as EVAL_PREFIX
from .evaluate import Evaluation, evaluation_stage

# What a training stage records of its result (its checkpoint, and the digest of its tensors)
RECORDED = {"out": PATH, "checkpoint": PATH, "tensors_sha256": optional(STR)}
MAX_CHECKPOINT_STATE = 64 << 20
PREFIX = "train_"  # graph stage train_<name> trains the registered training stage <name>

T = TypeVar("T", bound=StageConfig)

# (the stage's context, its typed config, what launch did) -> the outputs a stage adds to
# out, checkpoint and tensors_sha256 (recorded in this order, then ``workers``)
Results = Callable[[StageContext, Any, Launched], dict[str, Any]]
Inputs = Callable[[StageContext], dict[str, str]]


def typed_section(cls: type[T], config: RunConfig, name: str) -> T:
    """Section ``name`` as the training stage's typed config (keys and types checked)."""
    section: dict[str, Any] = config.section(name)
    refuse_unknown_keys(name, section, (f.name for f in dataclasses.fields(cls)))
    return cls.load(None, **section)


def training_stages(stages: Iterable[Stage]) -> tuple[Stage, ...]:
    """Of ``stages``, the training stages, in their order."""
    return tuple(s for s in stages if s.trains)


def training_config(stage: Stage, config: RunConfig) -> StageConfig:
    """Training stage ``stage``'s section of the run config as its spec's typed config."""
    return typed_section(get_stage(stage.trains).config, config, stage.section)


def trained_dropout(before: tuple[Stage, ...], name: str) -> Callable[[RunConfig], float | None]:
    """Of a run config, the conditioning dropout the student of training stage ``name`` will be
    trained with (stage_spec.planned_dropout over the training stages placed up to it, each
    from the one before); None when one of them is disabled or ``name`` is not among ``before``."""
    stages = training_stages(before)
    names = [s.name for s in stages]
    lineage = stages[: names.index(name) + 1] if name in names else ()

    def dropout(config: RunConfig) -> float | None:
        if not lineage or not all(config.enabled(s.section) for s in lineage):
            return None
        return planned_dropout((get_stage(s.trains), training_config(s, config)) for s in lineage)
    return dropout


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


def derived_inputs(spec: TrainingStage, before: tuple[Stage, ...]) -> tuple[tuple[str, ...], Inputs]:
    """(the stages it needs, its inputs) from what ``spec`` trains from: ``cache_url`` is the
    tagged cache, ``init_url`` the checkpoint of the last training stage in ``before``."""
    previous = training_stages(before)
    sources: dict[str, tuple[str, str]] = {}  # input -> (stage, output key)
    for key in spec.inputs:
        if key == "cache_url":
            sources[key] = ("tag", "cache_url")
        elif key == "init_url" and previous:
            sources[key] = (previous[-1].name, "checkpoint")
        elif key == "init_url":
            raise ValueError(f"training stage {spec.name!r} starts from a trained student "
                             "(init_url): place it after another training stage")
        else:
            raise ValueError(f"training stage {spec.name!r} trains from {key!r}, which the run "
                             "graph cannot derive (it gives cache_url and init_url); pass inputs= "
                             "and needs= to register_training_stage")
    needs = tuple(dict.fromkeys(stage for stage, _ in sources.values()))
    return needs, lambda ctx: {k: ctx.outputs(stage)[key] for k, (stage, key) in sources.items()}


def continues(config: type[StageConfig]) -> Continues:
    """What an edited run may change and still continue the stage from its checkpoint: its
    config's ``CONTINUES`` keys, with the defaults a section that leaves them unset has."""
    fields = {f.name: f.default for f in dataclasses.fields(config)}
    return Continues(keys=dict(config.CONTINUES), defaults={k: fields[k] for k in config.CONTINUES})


def _default_results(spec: TrainingStage) -> Results:
    def results(ctx: StageContext, config: Any, done: Launched) -> dict[str, Any]:
        del ctx
        return {"step": spec.total_steps(config), "train_seconds": done.train_seconds}
    return results


def _run(spec: TrainingStage, out: str, inputs: Inputs, results: Results) -> Callable[[StageContext], dict[str, Any]]:
    def run(ctx: StageContext) -> dict[str, Any]:
        typed, folder, urls = typed_section(spec.config, ctx.config, spec.table), ctx.path(out), inputs(ctx)
        count, failures = workers(ctx)
        done = launch(spec, typed, count, out_url=folder, max_failures=failures,
                      progress=ctx.progress, log=ctx.console.print, **urls)
        own = results(ctx, typed, done)
        checkpoint = finished_checkpoint(folder, spec.total_steps(typed), spec.title)
        return {"out": folder, "checkpoint": checkpoint,
                "tensors_sha256": tensors_sha256(checkpoint), **own, "workers": count}
    return run


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class GraphTraining:
    """How a training stage sits in the run graph, beyond what its spec says."""

    spec: TrainingStage
    title: str = ""  # its line in the stage list (default "train <spec title>")
    out: str = ""  # its run-folder path (default student_<name>)
    results: Results | None = None  # default: step and train_seconds
    recorded: Mapping[str, str] = dataclasses.field(default_factory=dict)  # beyond RECORDED
    # Where its inputs come from, instead of the derived ones (needs: the stages they read)
    inputs: Inputs | None = None
    needs: tuple[str, ...] = ()
    extra_inputs: Callable[[StageContext], dict[str, Any]] | None = None  # fingerprint inputs
    evaluation: Evaluation | None = None  # its eval stage's place (None: not scored)

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.spec.name}"

    def build(self, before: tuple[Stage, ...]) -> Stage:
        """Its graph stage, after the stages ``before`` it."""
        spec = self.spec
        needs, inputs = ((self.needs, self.inputs) if self.inputs is not None
                         else derived_inputs(spec, before))
        out = self.out or f"student_{spec.name}"
        extra = {"extra_inputs": self.extra_inputs} if self.extra_inputs else {}
        return Stage(name=self.name, title=self.title or f"train {spec.title}", section=spec.table,
                     run=_run(spec, out, inputs, self.results or _default_results(spec)),
                     seeded=True, artefact=f"{out}/metrics.jsonl", needs=needs, writes=(out,),
                     resumable=True, check=lambda config: typed_section(spec.config, config, spec.table),
                     still_there=checkpoint_intact, recorded={**RECORDED, **self.recorded},
                     trains=spec.name, continues=continues(spec.config), **extra)


def register_training_stage(spec: TrainingStage, *, order: int, replace: bool = False,
                            **graph: Any) -> str:
    """The one call that adds training stage ``spec``: to student_train's registry (unless it
    is there already: the built-in stages register themselves) and to the run graph at
    ``order`` as ``train_<name>``, reading section ``[<spec.table>]``. ``graph`` takes the
    fields of ``GraphTraining`` (title, out, results, recorded, inputs and needs,
    extra_inputs, evaluation: also place its eval stage). Returns the graph stage's name."""
    placed = GraphTraining(spec=spec, **graph)
    if placed.inputs is None and placed.needs:
        raise TypeError(f"training stage {spec.name!r}: needs= goes with inputs= (the stages "
                        "those inputs read)")
    placing = [(placed.name, placed.build, order, placed.title)]
    if placed.evaluation is not None:
        scored = placed.evaluation
        placing.append((f"{EVAL_PREFIX}{spec.name}",
                        lambda before: evaluation_stage(spec, placed.name, scored,
                                                        dropout=trained_dropout(before, placed.name)),
                        scored.order, scored.title))
    held = [name for name, *_ in placing if name in GRAPH_STAGES]
    placed_now: list[str] = []
    try:
        for name, build, at, title in placing:
            register_graph_builder(name, build, order=at, title=title, replace=replace)
            placed_now.append(name)
        if not (spec.name in TRAINERS and TRAINERS.get(spec.name) is spec):
            register_stage(spec, replace=replace)
    except (TypeError, ValueError):
        for name in placed_now:  # all or nothing: no graph stage for a refused registration
            if name not in held:
                unregister_graph_stage(name)
        raise
    return placed.name


def unregister_training_stage(name: str) -> None:
    """Remove training stage ``name`` (and its eval stage, if it has one) from both registries
    (a plug-in or a test cleaning up)."""
    unregister_graph_stage(f"{PREFIX}{name}")
    if f"{EVAL_PREFIX}{name}" in GRAPH_STAGES:
        unregister_graph_stage(f"{EVAL_PREFIX}{name}")
    TRAINERS.unregister(name)
