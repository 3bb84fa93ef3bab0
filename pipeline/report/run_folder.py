"""Reading a run folder (RUN_LAYOUT: run.toml, run_state.json, cache/, student/, eval_*.json,
...) for the report, whatever state the run is in. Nothing here raises on a missing or torn
file: a missing artefact is "pending", an unreadable one carries its error for the page."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import fsspec

from pipeline.graph.stages import STAGE_NAMES
from pipeline.graph.stages import STAGES as GRAPH_STAGES

STAGES = STAGE_NAMES
STATUSES = ("pending", "running", "done", "failed", "skipped")


def artefacts() -> dict[str, str]:
    """The artefact each stage leaves (RUN_LAYOUT), for runs written before run_state.json
    existed; read from the stage list at each call (a stage registered later is in it)."""
    return {s.name: s.artefact for s in GRAPH_STAGES if s.artefact}



@dataclass
class Loaded:
    """A file's parsed content, or why there is none (``missing`` or an error message)."""

    value: Any = None
    error: str | None = None
    missing: bool = False


@dataclass
class RunFolder:
    url: str
    fs: Any = field(init=False, repr=False)
    root: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def at(self, name: str) -> str:
        return f"{self.url}/{name}"

    def exists(self, name: str) -> bool:
        try:
            return bool(self.fs.exists(f"{self.root}/{name}"))
        except OSError:
            return False

    def is_local(self) -> bool:
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def text(self, name: str) -> Loaded:
        try:
            with self.fs.open(f"{self.root}/{name}", "r", encoding="utf-8") as handle:
                return Loaded(handle.read())
        except FileNotFoundError:
            return Loaded(missing=True)
        except (OSError, UnicodeDecodeError) as exc:
            return Loaded(error=f"{name}: {type(exc).__name__}: {exc}")

    def json(self, name: str) -> Loaded:
        loaded = self.text(name)
        if loaded.value is None:
            return loaded
        try:
            return Loaded(json.loads(loaded.value))
        except json.JSONDecodeError as exc:
            return Loaded(error=f"{name} is not valid JSON ({exc}); rerun its stage")

    def metrics(self, name: str) -> list[dict[str, Any]]:
        """Rows of a metrics.jsonl; a torn last line (a run killed mid-write) is skipped."""
        loaded = self.text(name)
        rows = []
        for line in (loaded.value or "").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def state(self) -> Loaded:
        return self.json("run_state.json")

    def stage(self, name: str) -> dict[str, Any]:
        """The stage's record from run_state.json, or one inferred from its artefact."""
        state = self.state().value
        stages = state.get("stages", {}) if isinstance(state, dict) else {}
        record = stages.get(name)
        if isinstance(record, dict) and record.get("status") in STATUSES:
            return record
        artefact = artefacts().get(name)
        return {"status": "done" if artefact and self.exists(artefact) else "pending", "inferred": True}

    def status(self, name: str) -> str:
        return self.stage(name)["status"]
