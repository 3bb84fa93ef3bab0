"""A stage of the run graph: its config section, what it needs, what it writes, how it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fsspec
from rich.console import Console

from .config import RAY_TABLE, RunConfig, RunConfigError, refuse_unknown_keys
from .state import RunState
from .state_schema import check_paths, recorded_paths

if TYPE_CHECKING:
    from .changes import Continues


@dataclass(kw_only=True, slots=True)
class StageContext:
    run_dir: str
    config: RunConfig
    state: RunState
    console: Console
    progress: bool = True
    # Each stage's typed output keys (``Stage.recorded``): the paths among them are checked
    # inside the run folder whenever a stage reads another's outputs
    recorded: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def path(self, relative: str) -> str:
        return f"{self.run_dir.rstrip('/')}/{relative}"

    def outputs(self, stage: str) -> dict[str, Any]:
        """The recorded outputs of a finished stage ({} when it did not finish or was skipped);
        a recorded path outside the run folder is refused (state_schema.RunStateError)."""
        record = self.state.get(stage)
        outputs = record.get("outputs", {}) if record.get("status") == "done" else {}
        check_paths(self.run_dir, stage, outputs, self.recorded.get(stage, {}))
        return outputs

    def exists(self, relative: str) -> bool:
        fs, path = fsspec.core.url_to_fs(self.path(relative))
        return fs.exists(path)

    def remove(self, relative: str) -> None:
        fs, path = fsspec.core.url_to_fs(self.path(relative))
        if fs.exists(path):
            fs.rm(path, recursive=True)


def _no_reason(ctx: StageContext) -> str | None:
    del ctx
    return None


def _no_inputs(ctx: StageContext) -> dict[str, Any]:
    del ctx
    return {}


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    title: str  # one line for the console
    section: str  # its run-config section (part of its fingerprint)
    run: Callable[[StageContext], dict[str, Any]]  # returns the outputs to record
    needs: tuple[str, ...] = ()  # stages whose outputs it reads; skipped when one is skipped
    uses: tuple[str, ...] = ()  # stages it reads when they ran (e.g. sample: AR else KD)
    writes: tuple[str, ...] = ()  # run-folder paths; removed before a fresh (not resumed) run
    # A reason not to run (besides ``enabled = false``), from the config and upstream outputs
    skip_reason: Callable[[StageContext], str | None] = _no_reason
    # Inputs outside the config and upstream stages (e.g. the corpus file's checksum)
    extra_inputs: Callable[[StageContext], dict[str, Any]] = _no_inputs
    # Whether recorded outputs are still in place (default: every ``writes`` path exists)
    still_there: Callable[[StageContext, dict[str, Any]], bool] | None = None
    resumable: bool = False  # an interrupted run continues from what it committed
    # Section keys whose change lets it continue from its outputs too, not start over (a trainer
    # given more steps resumes from its newest checkpoint); None: any change starts it over
    continues: Continues | None = None
    # Refuses a bad section before any stage runs (a typo fails in seconds, not after the cache)
    check: Callable[[RunConfig], None] | None = None
    # Section keys that change how, not what, it computes (left out of the fingerprint)
    volatile: tuple[str, ...] = ()
    seeded: bool = False  # its section's ``seed`` defaults to ``[run] seed``
    # The file it leaves in the run folder, by which the report tells it finished in runs
    # written before run_state.json existed ("": none)
    artefact: str = ""
    # Output keys other stages or the up-to-date check read, and what they hold
    # (state_schema kinds: path, path@ref, paths, int, str, ...): run_state.json is checked
    # against them on load, and every recorded path must lie in the run folder and exist for
    # the stage to be up to date
    recorded: Mapping[str, str] = field(default_factory=dict)
    # The registered training stage (student_train.stages) it trains, "" for any other stage:
    # how sample, compare and the report find the training stages without naming them
    trains: str = ""
    # Whether it may run as a Ray task (its section's ``ray`` table; pipeline/graph/remote.py):
    # it reads only the config, the run state and files, and writes only in the run folder
    ray_task: bool = False
    # Whether its run starts Ray tasks of its own with its section's ``ray`` table while it runs
    # in the driver (compare: a task per cell)
    ray_inside: bool = False
    paths: tuple[str, ...] = ()  # section keys naming local files: made absolute for a Ray task
    upstream: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "upstream", self.needs + tuple(u for u in self.uses if u not in self.needs))

    def outputs_present(self, ctx: StageContext, outputs: dict[str, Any]) -> bool:
        check_paths(ctx.run_dir, self.name, outputs, self.recorded)
        for _, path in recorded_paths(outputs, self.recorded):
            fs, local = fsspec.core.url_to_fs(path)
            if not fs.exists(local):
                return False
        if self.still_there is not None:
            return self.still_there(ctx, outputs)
        return all(ctx.exists(p) for p in self.writes)


def check_section(config: RunConfig, section: str, stages: Iterable[Stage]) -> None:
    """``[section]`` parsed by the checks of the ``stages`` that read it. A section that none of
    them checks reads no key but ``enabled``: any other (``[report] foo = 1``) is refused with
    the closest valid key, never ignored."""
    stages = tuple(stages)
    _check_placement(config, section, stages)
    checks = dict.fromkeys(s.check for s in stages if s.section == section and s.check)
    if not checks:
        refuse_unknown_keys(section, config.section(section), ("enabled",))
    for check in checks:
        check(config)


def _check_placement(config: RunConfig, section: str, stages: tuple[Stage, ...]) -> None:
    """A ``ray`` table only where every stage of the section can run as a Ray task (or starts
    its own), and a valid one (RunConfigError): never ignored."""
    if config.placement(section) is None:
        return
    own = [s.name for s in stages if s.section == section]
    if not own or not all(s.ray_task or s.ray_inside for s in stages if s.section == section):
        takers = ", ".join(f"[{s.section}]" for s in stages if s.ray_task or s.ray_inside) or "none"
        raise RunConfigError(f"[{section}] {RAY_TABLE}: stage {', '.join(own) or section} runs in "
                             f"the driver, not as a Ray task (sections that take {RAY_TABLE}: {takers})")
