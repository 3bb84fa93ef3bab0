"""`s2dit run --plan`: what a run would do to a run folder, stage by stage, without running
or writing anything (the same decisions as runner.run_graph, made on the recorded state).

A stage that would run makes every stage downstream of it run too: its finish time is one of
their inputs."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

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


def plan_graph(config: RunConfig, stages: tuple[Stage, ...], run_dir: str, *,
               from_stage: str | None = None, only: str | None = None) -> list[Step]:
    """One Step per stage, in order; reads the run folder, writes nothing."""
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
            step = _decide(stage, ctx, record, digest(_inputs(stage, ctx)))
        if step.action in WOULD_RUN:
            reruns.add(stage.name)
        steps.append(step)
    return steps


def _decide(stage: Stage, ctx: StageContext, record: dict, fingerprint: str) -> Step:
    """A stage that has a record (plan_graph handled pending ones), no flag and no rerun upstream."""
    status = record["status"]
    if _up_to_date(stage, ctx, record, fingerprint):
        return Step(stage.name, "up to date", f"fingerprint {fingerprint[:12]}")
    if record.get("fingerprint") == fingerprint:
        if stage.resumable and status in ("running", "failed"):
            return Step(stage.name, "resume", f"interrupted ({status}), same inputs")
        if status == "done":
            return Step(stage.name, "run", "its outputs are missing")
        return Step(stage.name, "run", f"last {status}, same inputs")
    return Step(stage.name, "run", f"its inputs changed since it was {status}")
