"""`s2dit run --plan`: what a run would do to a run folder, stage by stage, without running
or writing anything (the same decisions as runner.run_graph, made on the recorded state).

A stage that would run makes every stage downstream of it run too: its finish time is one of
their inputs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from .config import RunConfig
from .fingerprint import canonical, digest
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
    changes = changed_inputs(record.get("inputs"), inputs, stage.section)
    return Step(stage.name, "run", f"its inputs changed since it was {status}"
                + (f": {'; '.join(changes)}" if changes else ""))


def changed_inputs(before: dict[str, Any] | None, after: dict[str, Any], section: str) -> list[str]:
    """What differs between a stage's recorded inputs and its inputs now, for people: changed
    keys of its section (nested keys dotted) with old and new values, then other inputs and
    upstream stages that ran again. Empty when nothing was recorded (an older run_state.json)."""
    if not isinstance(before, dict):
        return []
    before, after = json.loads(canonical(before)), json.loads(canonical(after))  # as recorded
    keys = _diff(before.get("section", {}), after.get("section", {}))
    changes = [f"[{section}] " + ", ".join(keys)] if keys else []
    if before.get("enabled") != after.get("enabled"):
        changes.append(f"[{section}] enabled {_show(before.get('enabled'))} -> "
                       f"{_show(after.get('enabled'))}")
    extra = _diff(before.get("extra", {}), after.get("extra", {}))
    if extra:  # e.g. the corpus file's ukey, the recipes a compare stage trains with
        changes.append("other inputs " + ", ".join(extra))
    reran = sorted(name for name, now in after.get("upstream", {}).items()
                   if before.get("upstream", {}).get(name) != now)
    if reran:
        changes.append(f"upstream {', '.join(reran)} ran again")
    return changes


_UNSET = object()  # a key on one side only


def _diff(before: Any, after: Any, prefix: str = "") -> list[str]:
    """``key old -> new`` for every leaf that differs, nested dicts walked with dotted keys."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [line for key in sorted(set(before) | set(after))
                for line in _diff(before.get(key, _UNSET), after.get(key, _UNSET),
                                  f"{prefix}.{key}" if prefix else key)]
    if before == after:
        return []
    return [f"{prefix} {_show(before)} -> {_show(after)}"]


def _show(value: Any, limit: int = 40) -> str:
    if value is _UNSET:
        return "(unset)"
    text = format(value, "g") if isinstance(value, float) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
