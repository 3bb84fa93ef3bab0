"""The run config: one TOML file with a section per stage, includes resolved.

Sections (each optional but ``[corpus]``; a stage's section is part of its fingerprint): ``[run]``
and one per stage, named by its ``Stage.section`` (pipeline/graph/stages; ``s2dit run --help``
lists them in order). ``[run]`` holds out (run folder default), seed (default of every seeded
section's ``seed``), train_workers (Ray Train workers of the training stages, default 1: in
process) and max_failures (worker-group restarts with train_workers > 1).

The job and training sections are the tables `s2dit cache generate` and `s2dit train` read, so a
recipe file serves both. Any section may say
``include = "FILE"`` (relative to this file, or a URL): that file's table of the same name is the
base and this section's keys override it (sub-tables merged key by key). Any stage's section
may say ``enabled = false`` to skip that stage (and what only it feeds). The section of a stage
that can run as a Ray task (``Stage.ray_task``: sample, report) may say ``ray = {num_gpus = 1,
memory_gb = 96}``: that stage then runs in a Ray task with those resources (pipeline/graph/remote.py)
rather than in the driver; like ``enabled``, the table is not passed to the stage nor fingerprinted.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cache_schema.typed_config import unknown_keys_message

RUN_KEYS = {"out", "seed", "train_workers", "max_failures"}  # none is fingerprinted
GRAPH_SET_JOB_KEYS = ("prompts", "output")  # the graph points these into the run folder
BUNDLED_PACKAGE = "pipeline"  # pipeline/configs is the repository's configs/ (package data)
RAY_TABLE = "ray"  # a section's Ray-task resources (TaskResources), read by the runner only


class RunConfigError(ValueError):
    """A run config that cannot be used (names the file and the key)."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class TaskResources:
    """What a stage's Ray task asks the cluster for (a section's ``ray`` table)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_gb: float = 0.0  # host memory reserved for the task, GB of 10^9 bytes (0: none)

    @classmethod
    def parse(cls, section: str, table: Any) -> TaskResources:
        """``[section] ray``'s table, its keys and values checked (RunConfigError)."""
        if not isinstance(table, dict):
            raise RunConfigError(f"[{section}] {RAY_TABLE} must be a table such as "
                                 f"{{num_gpus = 1, memory_gb = 96}}, got {table!r}")
        refuse_unknown_keys(f"{section}.{RAY_TABLE}", table, (f.name for f in dataclasses.fields(cls)))
        for key, value in table.items():
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or value < 0):
                raise RunConfigError(f"[{section}.{RAY_TABLE}] {key} must be a number >= 0, "
                                     f"got {value!r}")
        return cls(**table)

    def describe(self) -> str:
        memory = f", {self.memory_gb:g} GB" if self.memory_gb else ""
        return f"{self.num_cpus:g} CPU, {self.num_gpus:g} GPU{memory}"


@dataclass(kw_only=True, slots=True)
class RunConfig:
    source: str  # where it was read from
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # in stage order
    seeded: frozenset[str] = frozenset()  # sections whose ``seed`` defaults to ``[run] seed``

    @property
    def out(self) -> str | None:
        return self.run.get("out")

    @property
    def run(self) -> dict[str, Any]:
        return self.sections.get("run", {})

    def section(self, name: str) -> dict[str, Any]:
        """The resolved keys a stage passes on (a copy; ``enabled`` and ``ray`` removed, ``seed``
        defaulted to ``[run] seed``)."""
        out = copy.deepcopy(self.sections.get(name, {}))
        out.pop("enabled", None)
        out.pop(RAY_TABLE, None)
        if name in self.seeded and self.run.get("seed") is not None:
            out.setdefault("seed", self.run["seed"])
        return out

    def resolved(self) -> dict[str, dict[str, Any]]:
        """Every section as stages see it (what run.toml records)."""
        out = {}
        for name in self.sections:
            section = self.section(name) if name != "run" else dict(self.run)
            if name != "run" and not self.enabled(name):
                section["enabled"] = False
            if name != "run" and RAY_TABLE in self.sections[name]:
                section[RAY_TABLE] = copy.deepcopy(self.sections[name][RAY_TABLE])
            if section:
                out[name] = section
        return out

    def placement(self, name: str) -> TaskResources | None:
        """Section ``name``'s Ray-task resources (its ``ray`` table), None: run in process."""
        table = self.sections.get(name, {}).get(RAY_TABLE) if name != "run" else None
        return None if table is None else TaskResources.parse(name, table)

    def enabled(self, name: str) -> bool:
        return bool(self.sections.get(name, {}).get("enabled", True))

    def override(self, name: str, **values: Any) -> None:
        """Set keys of a section (None: leave as is), e.g. from command-line flags."""
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            self.sections.setdefault(name, {}).update(values)


def refuse_unknown_keys(table: str, values: dict[str, Any], known: Iterable[str]) -> None:
    """A key of ``[table]`` that is none of ``known`` is refused by name (with the closest known
    key), so a run config's typo reads as one, never as a bad flag."""
    known = set(known)
    unknown = set(values) - known
    if unknown:
        raise RunConfigError(unknown_keys_message(table, unknown, known))


def bundled_config(name: str) -> str:
    """The path of a config shipped inside the package (configs/NAME), e.g. ``demo.toml``."""
    resource = importlib.resources.files(BUNDLED_PACKAGE) / "configs" / name
    if not resource.is_file():
        raise FileNotFoundError(f"no bundled config {name!r} in the installed package "
                                f"({BUNDLED_PACKAGE}/configs); reinstall s2dit")
    return str(resource)
