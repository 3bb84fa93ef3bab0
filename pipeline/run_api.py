"""The Python API of `s2dit run` and `s2dit demo` (pipeline/commands/ parses their flags and
calls it): a run config through the stage graph (pipeline/graph, whose runner.py runs the
stages), with its run folder, its lock, its plan and its summary.

The demo is configs/demo.toml, shipped inside the package (pipeline/configs); its flags are
overrides of that config's sections (``DEMO_FLAGS``). The stages (pipeline/graph/stages, one
module each, and any registered later), their sections and what they write are listed by
``pipeline.graph.stages.stage_lines()``, read from the stage registry at each call: `s2dit run
--help` shows them.
"""

from __future__ import annotations

from typing import Any

import fsspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cache_schema.store import absolute_url
from pipeline.graph import STAGES, RunConfig, bundled_config, load_run_config, run_graph
from pipeline.graph.plan import Step, plan_graph
from pipeline.graph.run_lock import RunLock
from pipeline.graph.runner import check_run
from pipeline.graph.state import RunState
from pipeline.graph.state_schema import RunStateError

DEMO_CONFIG = "demo.toml"

# `s2dit demo` flag -> (section, key) of the demo config
DEMO_FLAGS: dict[str, tuple[str, str]] = {
    "out": ("run", "out"),
    "seed": ("run", "seed"),
    "train_classes": ("corpus", "train_classes"),
    "per_class": ("job", "seeds_per_prompt"),
    "encoding": ("job", "encoding"),
    "num_actors": ("job", "num_actors"),
    "train_steps": ("train", "steps"),
    "batch_size": ("train", "batch_size"),
    "ar_steps": ("train_ar", "steps"),
    "ar_causal_steps": ("train_ar", "causal_steps"),
    "ar_batch_size": ("train_ar", "batch_size"),
    "eval_per_class": ("eval", "per_class"),
}


def demo_config(**flags: Any) -> RunConfig:
    """The bundled demo config with ``s2dit demo`` flags applied (None: the config's value).
    ``ar_steps = 0`` skips stage 2, as the flag always did."""
    config = load_run_config(bundled_config(DEMO_CONFIG))
    unknown = sorted(set(flags) - set(DEMO_FLAGS))
    if unknown:
        raise TypeError(f"unknown demo settings {unknown}; known: {sorted(DEMO_FLAGS)}")
    for flag, value in flags.items():
        if value is None:
            continue
        section, key = DEMO_FLAGS[flag]
        if flag == "ar_steps" and value == 0:
            config.override(section, enabled=False)
            continue
        config.override(section, **{key: value})
    return config


def _run_dir(config: RunConfig, out: str | None) -> str:
    """The run folder, absolute when local: run_state.json records the paths under it, and
    stages hand them to Ray actors and Ray Train workers (which run in other folders)."""
    run_dir = absolute_url(out or config.out)
    if not run_dir:
        raise ValueError(f"no run folder: pass --out URL or set [run] out in {config.source}")
    config.override("run", out=run_dir)
    return run_dir


def run_config(config: RunConfig, *, out: str | None = None, from_stage: str | None = None,
               only: str | None = None, console: Console | None = None,
               progress: bool = True) -> RunState:
    """Run (or bring up to date) the whole graph of ``config`` in ``out`` (default its
    ``[run] out``)."""
    run_dir = _run_dir(config, out)
    console = console or Console()
    # before the lock, which creates the folder: a refused run leaves none behind (and, outside
    # the try, gets no partial report either)
    check_run(config, STAGES, run_dir, from_stage=from_stage, only=only)
    # held over the partial report too (it writes into the folder); a folder in use by another
    # run is refused here, before anything is written
    with RunLock(run_dir, log=console.print) as lock:
        try:
            state = run_graph(config, STAGES, run_dir.rstrip("/"), from_stage=from_stage,
                              only=only, console=console, progress=progress, lock=lock)
        except RunStateError:
            raise  # its run_state.json is not to be trusted: no report is built from it
        except Exception:
            _partial_report(run_dir.rstrip("/"), console)
            raise
    print_summary(state, console)
    return state


def plan_config(config: RunConfig, *, out: str | None = None, from_stage: str | None = None,
                only: str | None = None, console: Console | None = None) -> list[Step]:
    """What ``run_config`` with the same arguments would do, stage by stage, printed as a
    table; nothing runs and nothing is written."""
    run_dir = _run_dir(config, out)
    steps = plan_graph(config, STAGES, run_dir.rstrip("/"), from_stage=from_stage, only=only)
    table = Table(title=f"s2dit run --plan: {run_dir}", show_edge=False)
    for column in ("stage", "would", "why"):
        table.add_column(column)
    for step in steps:  # reasons name sections ("[train] lr ..."): not rich markup
        table.add_row(step.stage, step.action, escape(step.why))
    (console or Console()).print(table)
    return steps


def _partial_report(run_dir: str, console: Console) -> None:
    """After a failed stage, the report of what did run (the failure shows in it); a problem
    writing it must not hide the stage's own error."""
    from pipeline.graph.state import STATE_FILE
    from pipeline.report import write_report

    fs, root = fsspec.core.url_to_fs(run_dir)
    if not fs.exists(f"{root}/{STATE_FILE}"):
        return  # refused before any stage ran
    try:
        before = _entries(fs, root)
        html = write_report(run_dir)
        # recorded, so that the report stage of the rerun replaces these files
        state = RunState.load(run_dir, tuple(s.name for s in STAGES),
                              {s.name: s.recorded for s in STAGES})
        state.partial += sorted(_entries(fs, root) - before) + [html.rstrip("/").rsplit("/", 1)[-1]]
        state.save()
        console.print(f"partial report: {html}", soft_wrap=True)
    except Exception as exc:  # noqa: BLE001 - best effort; the stage's error follows
        console.print(f"(no partial report: {type(exc).__name__}: {exc})")


def _entries(fs: fsspec.AbstractFileSystem, root: str) -> set[str]:
    fs.invalidate_cache(root)
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)}


def print_summary(state: RunState, console: Console) -> None:
    """One line per stage (status, seconds or reason), then where the report is."""
    table = Table(title="s2dit run", show_edge=False)
    for column in ("stage", "status", "seconds", "note"):
        table.add_column(column)
    for name, record in state.stages.items():
        seconds = record.get("seconds")
        table.add_row(name, record["status"], "" if seconds is None else f"{seconds:.1f}",
                      record.get("reason") or record.get("error") or "")
    console.print(table)
    html = state.get("report").get("outputs", {}).get("report_html")
    if html:
        console.print(f"report: {html}  (open it in a browser)", soft_wrap=True)
