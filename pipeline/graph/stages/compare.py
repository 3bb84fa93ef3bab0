"""Stage compare: a grid of students side by side on the run's cache -> RUN_DIR/compare/
(results.json, index.html; pipeline/compare). Runs only when the config has a ``[compare]``
section (configs/compare.toml); skipped otherwise, and on a cache without an oracle.

Why a stage of the run graph and not a command of its own: the grid needs what the graph
already makes and checks (the cache, verified and tagged; the recipes of its training stages,
``[train]`` and ``[train_ar]``; the held-out noise of ``[eval]``), so one ``s2dit run configs/compare.toml`` goes from
nothing to the comparison page, and the graph's fingerprints, run lock, ``--only compare``,
``--plan`` and report come with it. ``s2dit run configs/compare.toml --out RUN`` on a finished
run of the same sections (configs/memory.toml's) finds those stages up to date and runs the
grid alone on that run's cache. The grid keeps its own finer bookkeeping per (variant, seed)
(pipeline/compare/grid.py): the stage lists nothing in ``writes``, so that a changed section
never makes the runner delete trained cells; a cell is retrained only when its own recipe
changed, and adding a variant or a seed trains only the new cells.

Reads ``[compare]`` (CompareConfig: variants, seeds, lengths, per_class, noise, latency_batch,
latency_repeats, samples; guidance, unseen and lcha_window, the cells scored as ``s2dit eval
--guidance --unseen --lcha-window`` scores; max_parallel and ray: cells side by side as Ray tasks, neither
fingerprinted, as where a cell runs is not what it computes), the section of every training
stage placed before it (``[train]``, ``[train_ar]``: every variant's recipe, trained in that
order), ``[eval] seed``; ``[run] train_workers`` and ``max_failures`` as the training stages do."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from pipeline.compare import CompareConfig, Grid, run_grid
from pipeline.compare.grid import PAGE, RESULTS, Training, check_guidance
from pipeline.compare.summary import PARETO_SET, versus_sentences
from student_train.stages import get_stage

from ..config import RunConfig, refuse_unknown_keys
from ..registry import register_graph_builder
from ..stage import Stage, StageContext
from ..state_schema import PATH
from .evaluate import _oracle_only
from .training import training_config, training_stages, workers

SECTION = "compare"


def _present(config: RunConfig) -> bool:
    return bool({k for k in config.sections.get(SECTION, {}) if k != "enabled"})


def compare_config(config: RunConfig) -> CompareConfig | None:
    """``[compare]`` as its typed config (None when the run config has none)."""
    if not _present(config):
        return None
    section = config.section(SECTION)
    refuse_unknown_keys(SECTION, section, (f.name for f in dataclasses.fields(CompareConfig)))
    resources = config.placement(SECTION)  # the cells' Ray tasks: the ray table, parsed as every section's
    return CompareConfig(**section, ray=None if resources is None else dataclasses.asdict(resources))


def _check(config: RunConfig, trained: tuple[Stage, ...]) -> None:
    compare = compare_config(config)
    if compare is not None:  # the variants' recipes must parse too
        trainings = tuple(Training(get_stage(s.trains), training_config(s, config)) for s in trained)
        if compare.guidance != 1.0:  # every variant's student trained to be guided, or refused now
            check_guidance(Grid(compare=compare, trainings=trainings, cache_url="", generation=0, out=""))


def _skip(ctx: StageContext) -> str | None:
    if not _present(ctx.config):
        return "the run config has no compare section (configs/compare.toml has one)"
    return _oracle_only(ctx)


def _recipes(ctx: StageContext, trained: tuple[Stage, ...]) -> dict[str, Any]:
    """What every cell is trained and scored with besides [compare] (nothing without it)."""
    if not _present(ctx.config):
        return {}
    return {s.section: ctx.config.section(s.section) for s in trained} | \
        {"eval_seed": ctx.config.section("eval").get("seed", 0)}


def run(ctx: StageContext, trained: tuple[Stage, ...]) -> dict[str, Any]:
    compare = compare_config(ctx.config)
    assert compare is not None  # _skip
    tag = ctx.outputs("tag")
    count, failures = workers(ctx)
    trainings = tuple(Training(get_stage(s.trains), training_config(s, ctx.config)) for s in trained)
    grid = Grid(compare=compare, trainings=trainings, cache_url=tag["cache_url"],
                generation=tag["generation"], out=ctx.path(SECTION),
                eval_seed=_recipes(ctx, trained)["eval_seed"], workers=count, max_failures=failures,
                sample_prompts=tuple(ctx.outputs("corpus").get("sample_prompts", ())),
                progress=ctx.progress, log=ctx.console.print)
    results = run_grid(grid)
    front = ", ".join(results["pareto"]["front"])
    ctx.console.print(f"{len(results['cells'])} students compared: {ctx.path(f'{SECTION}/{PAGE}')} "
                      f"(Pareto front at {results['pareto']['length']}: {front})")
    for set_key in (PARETO_SET, *results.get("versus_sets", {})):
        for line in versus_sentences(results, set_key):
            ctx.console.print(line, highlight=False, markup=False)
    return {"results": ctx.path(f"{SECTION}/{RESULTS}"), "page": ctx.path(f"{SECTION}/{PAGE}")}


TITLE = "students side by side -> compare/ (with [compare])"


def stage(before: tuple[Stage, ...]) -> Stage:
    """The compare stage, training every cell with the training stages placed ``before`` it."""
    trained = training_stages(before)
    return Stage(name="compare", title=TITLE, section=SECTION,
                 run=functools.partial(run, trained=trained), needs=("tag", "generate", "corpus"),
                 resumable=True, check=functools.partial(_check, trained=trained),
                 skip_reason=_skip, extra_inputs=functools.partial(_recipes, trained=trained),
                 artefact=f"{SECTION}/{RESULTS}", recorded={"results": PATH, "page": PATH},
                 ray_inside=True, volatile=("max_parallel",))


register_graph_builder("compare", stage, order=100, title=TITLE)
