"""Run the stage graph over a run folder: skip what is up to date, resume what was
interrupted, rerun what changed and everything downstream of it.

A stage's fingerprint is the digest of its inputs: its resolved config section, extra inputs
(e.g. the corpus file's checksum), and for every upstream stage its fingerprint and the time it
finished. A rerun of a stage therefore makes everything downstream of it stale, and a stage
whose inputs are unchanged and whose outputs are in place is skipped. A stage found
``running`` or ``failed`` with the same fingerprint (a killed or crashed run) is run again on
the same output folders, so the cache job and the trainers resume from what they committed;
one whose inputs changed starts over (its old outputs are removed first).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import fsspec
from rich.console import Console
from rich.markup import escape

from .changes import continuation
from .config import RunConfig, RunConfigError
from .fingerprint import digest
from .remote import run_stage
from .run_folder import check_run_folder
from .run_lock import RunLock
from .stage import Stage, StageContext, check_section
from .state import STATE_FILE, RunState, now
from .toml_out import dumps


class StageOrderError(ValueError):
    """--from / --only name a stage that cannot run yet (or does not exist)."""


def _inputs(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    upstream = {}
    for name in stage.upstream:
        record = ctx.state.get(name)
        upstream[name] = {"fingerprint": record.get("fingerprint"), "status": record["status"],
                          "finished": record.get("finished")}
    section = {k: v for k, v in ctx.config.section(stage.section).items() if k not in stage.volatile}
    return {"section": section, "enabled": ctx.config.enabled(stage.section),
            "extra": stage.extra_inputs(ctx), "upstream": upstream}


def _skip_reason(stage: Stage, ctx: StageContext) -> str | None:
    if not ctx.config.enabled(stage.section):
        return f"disabled: [{stage.section}] enabled = false"
    for name in stage.needs:
        if ctx.state.get(name)["status"] == "skipped":
            return f"its input stage {name} was skipped"
    return stage.skip_reason(ctx)


def _up_to_date(stage: Stage, ctx: StageContext, record: dict[str, Any], fingerprint: str) -> bool:
    return (record.get("fingerprint") == fingerprint and record["status"] in ("done", "skipped")
            and (record["status"] == "skipped" or stage.outputs_present(ctx, record.get("outputs", {}))))


def check_flags(stages: Sequence[Stage], from_stage: str | None, only: str | None) -> tuple[str, ...]:
    """--from / --only name stages, not both; returns the stage names in order."""
    names = tuple(s.name for s in stages)
    for flag, value in (("--from", from_stage), ("--only", only)):
        if value is not None and value not in names:
            raise StageOrderError(f"{flag} {value!r} is not a stage; stages: {', '.join(names)}")
    if from_stage and only:
        raise StageOrderError("give --from or --only, not both")
    return names


def check_config(config: RunConfig, stages: Sequence[Stage]) -> None:
    """Every enabled stage's section parsed into its typed config (errors name the key)."""
    for section in dict.fromkeys(s.section for s in stages):
        if not config.enabled(section):
            continue
        try:
            check_section(config, section, stages)
        except (ValueError, TypeError) as exc:  # name the file and section, not "flags"
            names = ", ".join(s.name for s in stages if s.section == section)
            raise RunConfigError(f"{config.source} [{section}] (stage {names}): {exc}") from None


def check_run(config: RunConfig, stages: Sequence[Stage], run_dir: str, *,
              from_stage: str | None = None, only: str | None = None) -> tuple[str, ...]:
    """Everything that refuses a run, checked before its lock or any byte is written (so a
    refused run leaves no folder behind): the flags, every enabled stage's config, the folder
    itself and, for ``only``, that its input stages have finished. Reads, never writes;
    returns the stage names in order."""
    stages = tuple(stages)
    check_run_folder(run_dir)  # first: --out / or someone's folder is named as such
    names = check_flags(stages, from_stage, only)
    check_config(config, stages)
    if only:
        recorded = {s.name: s.recorded for s in stages}
        state = RunState.load(run_dir, names, recorded)  # a new folder: every stage pending
        _check_finished_inputs(stages[names.index(only)], state, only)
    return names


def write_run_config(run_dir: str, config: RunConfig) -> None:
    header = f"# The resolved run config (from {config.source}); written by `s2dit run`.\n"
    with fsspec.open(f"{run_dir.rstrip('/')}/run.toml", "w") as handle:
        handle.write(header + dumps(config.resolved()))


def run_graph(config: RunConfig, stages: Sequence[Stage], run_dir: str, *,
              from_stage: str | None = None, only: str | None = None,
              console: Console | None = None, progress: bool = True,
              lock: RunLock | None = None) -> RunState:
    """Bring every stage of ``run_dir`` up to date; returns the final state. ``from_stage``
    reruns that stage and everything after it; ``only`` runs one stage (its upstream must be
    up to date) and leaves the rest as they are. ``lock``: the run folder's lock, when the
    caller holds it already (it writes there after this returns); else taken here."""
    console = console or Console()
    stages = tuple(stages)  # one list for the whole run, whatever registers meanwhile
    names = check_run(config, stages, run_dir, from_stage=from_stage, only=only)
    if lock is None:
        with RunLock(run_dir, log=console.print) as own:
            return run_graph(config, stages, run_dir, from_stage=from_stage, only=only,
                             console=console, progress=progress, lock=own)
    ctx = _open_run(config, stages, run_dir, console, progress)
    forced_from = names.index(from_stage) if from_stage else len(names)
    for index, stage in enumerate(stages):
        if only and stage.name != only:
            continue
        if only:  # again under the lock: another run may have changed the state meanwhile
            _check_finished_inputs(stage, ctx.state, only)
        title = escape(f"{index + 1}/{len(stages)} {stage.name}: {stage.title}")  # "[compare]" is text
        _bring_up_to_date(stage, ctx, title, forced=stage.name == only or index >= forced_from)
    return ctx.state


def _open_run(config: RunConfig, stages: tuple[Stage, ...], run_dir: str, console: Console,
              progress: bool) -> StageContext:
    """The run folder's state (saved at once when new) and run.toml, as the stages see them."""
    fs, root = fsspec.core.url_to_fs(run_dir)
    fs.makedirs(root, exist_ok=True)
    recorded = {s.name: s.recorded for s in stages}
    state = RunState.load(run_dir, tuple(s.name for s in stages), recorded)
    if not fs.exists(f"{root}/{STATE_FILE}"):
        state.save()  # first, so that a run killed from here on leaves a run folder
    write_run_config(run_dir, config)
    return StageContext(run_dir=run_dir, config=config, state=state, console=console,
                        progress=progress, recorded=recorded)


def _check_finished_inputs(stage: Stage, state: RunState, only: str) -> None:
    stale = [u for u in stage.needs if state.get(u)["status"] != "done"]
    if stale:
        raise StageOrderError(f"--only {only}: its input stages {stale} have not finished; "
                              f"run without --only first")


def _bring_up_to_date(stage: Stage, ctx: StageContext, title: str, *, forced: bool) -> None:
    """Skip, leave, resume or (re)run one stage, recording what it did."""
    inputs = _inputs(stage, ctx)
    fingerprint = digest(inputs)
    record = ctx.state.get(stage.name)
    reason = _skip_reason(stage, ctx)
    if reason:
        if record.get("status") != "skipped" or record.get("fingerprint") != fingerprint:
            ctx.state.set(stage.name, {"status": "skipped", "reason": reason,
                                       "fingerprint": fingerprint, "inputs": inputs,
                                       "finished": now()})
        ctx.console.print(f"[dim]{title}: skipped ({escape(reason)})[/dim]")
        return
    if not forced and _up_to_date(stage, ctx, record, fingerprint):
        ctx.console.print(f"[dim]{title}: up to date (fingerprint {fingerprint[:12]})[/dim]")
        return
    resume = (not forced and stage.resumable and record.get("fingerprint") == fingerprint
              and record["status"] in ("running", "failed"))
    running = {"status": "running", "fingerprint": fingerprint, "inputs": inputs, "started": now()}
    why = _why_fresh(record, fingerprint, forced=forced)
    if not forced and record.get("fingerprint") not in (None, fingerprint):
        continues, changes = continuation(stage, record, inputs)  # more steps: from its checkpoint
        why = changes or why
        if continues:
            resume, running["continued"] = True, why
            ctx.console.print(f"{stage.name}: {why}", markup=False)
    if not resume:
        _clear(stage, ctx, record, why)
    ctx.console.rule(f"{title}{' (resuming)' if resume else ''}")
    if resume:
        running["resumed"] = record.get("resumed", 0) + 1
    _run_stage(stage, ctx, running)


def _why_fresh(record: dict[str, Any], fingerprint: str, *, forced: bool) -> str:
    """Why a stage runs afresh (its old outputs removed), when no change is named."""
    if forced:
        return "rerun asked (--from / --only)"
    if record.get("fingerprint") != fingerprint:
        return "its inputs changed"
    return "its outputs are missing" if record.get("status") == "done" else f"last {record.get('status')}"


def _run_stage(stage: Stage, ctx: StageContext, running: dict[str, Any]) -> None:
    """Run ``stage`` between its ``running`` record and its ``done`` or ``failed`` one."""
    t0 = time.perf_counter()
    ctx.state.set(stage.name, running)
    try:
        outputs = run_stage(stage, ctx)  # in process, or a Ray task ([section] ray)
    except BaseException as exc:  # KeyboardInterrupt too: the record says where it stopped
        ctx.state.set(stage.name, {**running, "status": "failed",
                                   "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                                   "finished": now(),
                                   "seconds": round(time.perf_counter() - t0, 3)})
        raise
    ctx.state.set(stage.name, {**running, "status": "done", "outputs": outputs, "finished": now(),
                               "seconds": round(time.perf_counter() - t0, 3)})


def _clear(stage: Stage, ctx: StageContext, record: dict[str, Any], why: str) -> None:
    """Remove a stage's old outputs before a fresh run (not the user's files: a path the state
    has no record of writing is refused, not deleted)."""
    present = [p for p in stage.writes if ctx.exists(p)]
    if not present:
        return
    unrecorded = [p for p in present if p not in ctx.state.partial]
    if unrecorded and record.get("status", "pending") == "pending":
        raise FileExistsError(f"{ctx.path(unrecorded[0])} exists but {ctx.state.url} does not "
                              f"record stage {stage.name} writing it; move it away or use another --out")
    ctx.console.print(f"{stage.name}: {why}; removing its old outputs {', '.join(present)}",
                      markup=False)
    for path in present:
        ctx.remove(path)
    ctx.state.partial = [p for p in ctx.state.partial if p not in present]  # saved with the stage
