"""`s2dit run --plan`: what a run would do to a run folder, stage by stage, without running
or writing anything (the same decisions as runner.run_graph, made on the recorded state).

A stage that would run makes every stage downstream of it run too: its finish time is one of
their inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from .changes import continuation
from .config import RunConfig
from .fingerprint import digest
from .run_folder import check_run_folder
from .runner import _inputs, _skip_reason, _up_to_date, check_config, check_flags
from .stage import Stage, StageContext
from .state import RunState

WOULD_RUN = ("run", "resume")


@dataclass(frozen=True)
class Step:
    stage: str
    action: str  # run | resume | up to date | skip | leave
    why: str


def plan_graph(config: RunConfig, stages: Sequence[Stage], run_dir: str, *,
               from_stage: str | None = None, only: str | None = None) -> list[Step]:
    """One Step per stage, in order; reads the run folder, writes nothing."""
    stages = tuple(stages)  # the registry's list as of now, as the run would take it
    names = check_flags(stages, from_stage, only)
    check_config(config, stages)
    check_run_folder(run_dir)  # what the run would refuse, --plan refuses too
    recorded = {s.name: s.recorded for s in stages}
    state = RunState.load(run_dir, names, recorded)  # loading writes nothing; only set() saves
    ctx = StageContext(run_dir=run_dir, config=config, state=state, console=Console(quiet=True),
                       progress=False, recorded=recorded)
    forced_from = names.index(from_stage) if from_stage else len(names)
    reruns: set[str] = set()
    steps = []
    for index, stage in enumerate(stages):
        record = state.get(stage.name)
        if only and stage.name != only:
            steps.append(Step(stage.name, "leave", f"--only {only}"))
            continue
        reason = _skip_reason(stage, ctx)
        upstream = [u for u in stage.upstream if u in reruns]
        if reason:
            step = Step(stage.name, "skip", reason)
        elif stage.name == only or index >= forced_from:
            step = Step(stage.name, "run", f"--only {only}" if only else f"--from {from_stage}")
        elif record.get("status", "pending") == "pending":
            step = Step(stage.name, "run", "not run yet")
        elif upstream:
            step = Step(stage.name, "run", f"upstream {', '.join(upstream)} reruns")
        else:
            step = _decide(stage, ctx, record, _inputs(stage, ctx))
        if step.action in WOULD_RUN:
            reruns.add(stage.name)
        _as_the_run_leaves_it(stage, ctx, step)
        steps.append(step)
    return steps


def _as_the_run_leaves_it(stage: Stage, ctx: StageContext, step: Step) -> None:
    """The stage's record as run_graph would leave it, in this plan's copy of the state only
    (never saved): the stages after it decide on that, as they do in the run (a stage that
    needs one now skipped is skipped; one whose needed stage runs again is not)."""
    record = ctx.state.get(stage.name)
    if step.action == "skip":
        fingerprint = digest(_inputs(stage, ctx))
        if record.get("status") != "skipped" or record.get("fingerprint") != fingerprint:
            ctx.state.stages[stage.name] = {"status": "skipped", "fingerprint": fingerprint,
                                            "finished": "(this run)"}
    elif step.action in WOULD_RUN:
        ctx.state.stages[stage.name] = {**record, "status": "done", "finished": "(this run)"}


def _decide(stage: Stage, ctx: StageContext, record: dict, inputs: dict[str, Any]) -> Step:
    """A stage that has a record (plan_graph handled pending ones), no flag and no rerun upstream."""
    status, fingerprint = record["status"], digest(inputs)
    if _up_to_date(stage, ctx, record, fingerprint):
        return Step(stage.name, "up to date", f"fingerprint {fingerprint[:12]}")
    if record.get("fingerprint") == fingerprint:
        if stage.resumable and status in ("running", "failed"):
            return Step(stage.name, "resume", f"interrupted ({status}), same inputs")
        if status == "done":
            return Step(stage.name, "run", "its outputs are missing")
        return Step(stage.name, "run", f"last {status}, same inputs")
    continues, why = continuation(stage, record, inputs)
    if continues:
        return Step(stage.name, "resume", why)
    return Step(stage.name, "run", f"its inputs changed since it was {status}" + (f": {why}" if why else ""))
