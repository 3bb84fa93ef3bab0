"""The run config: one TOML file with a section per stage, includes resolved.

Sections (each optional but ``[corpus]``; a stage's section is part of its fingerprint):

    [run]       out (run folder default), seed (default of every section's ``seed``),
                train_workers (Ray Train workers of both training stages, default 1: in
                process), max_failures (worker-group restarts with train_workers > 1)
    [corpus]    stage corpus:   kind = "analytic" (train_classes) | "inline" (prompts = [...])
                                | "file" (source = URL of a .txt / .jsonl / .parquet corpus)
    [job]       stage generate: teacher_jobs JobConfig keys, [job.teacher] the teacher's own
    [verify]    stage verify:   deep = true
    [tag]       stage tag:      name = "train"
    [train]     stage train_kd: student_train TrainConfig keys ([train.model] the architecture)
    [eval]      stages eval_kd / eval_ar: per_class, seed (analytic caches only)
    [train_ar]  stage train_ar: ARConfig keys
    [sample]    stage sample:   prompts (default the corpus's first ``count``), SampleConfig keys
    [report]    stage report

``[job]``, ``[train]`` and ``[train_ar]`` are the tables `s2dit cache generate`, `s2dit train
kd` and `s2dit train ar` read, so a recipe file serves both. Any section may say
``include = "FILE"`` (relative to this file, or a URL): that file's table of the same name is the
base and this section's keys override it (sub-tables merged key by key). Any stage's section
may say ``enabled = false`` to skip that stage (and what only it feeds).
"""

from __future__ import annotations

import copy
import importlib.resources
import posixpath
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

SECTIONS = ("run", "corpus", "job", "verify", "tag", "train", "eval", "train_ar", "sample", "report")
SEEDED = ("corpus", "job", "train", "eval", "train_ar", "sample")  # sections with a seed key
RUN_KEYS = {"out", "seed", "train_workers", "max_failures"}  # none is fingerprinted
GRAPH_SET_JOB_KEYS = ("prompts", "output")  # the graph points these into the run folder
BUNDLED_PACKAGE = "pipeline"  # pipeline/configs is the repository's configs/ (package data)


class RunConfigError(ValueError):
    """A run config that cannot be used (names the file and the key)."""


@dataclass(kw_only=True, slots=True)
class RunConfig:
    source: str  # where it was read from
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def out(self) -> str | None:
        return self.run.get("out")

    @property
    def run(self) -> dict[str, Any]:
        return self.sections.get("run", {})

    def section(self, name: str) -> dict[str, Any]:
        """The resolved keys a stage passes on (a copy; ``enabled`` removed, ``seed`` defaulted
        to ``[run] seed``)."""
        out = copy.deepcopy(self.sections.get(name, {}))
        out.pop("enabled", None)
        if name in SEEDED and self.run.get("seed") is not None:
            out.setdefault("seed", self.run["seed"])
        return out

    def resolved(self) -> dict[str, dict[str, Any]]:
        """Every section as stages see it (what run.toml records)."""
        out = {}
        for name in SECTIONS:
            section = self.section(name) if name != "run" else dict(self.run)
            if name != "run" and not self.enabled(name):
                section["enabled"] = False
            if section:
                out[name] = section
        return out

    def enabled(self, name: str) -> bool:
        return bool(self.sections.get(name, {}).get("enabled", True))

    def override(self, name: str, **values: Any) -> None:
        """Set keys of a section (None: leave as is), e.g. from command-line flags."""
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            self.sections.setdefault(name, {}).update(values)


def bundled_config(name: str) -> str:
    """The path of a config shipped inside the package (configs/NAME), e.g. ``demo.toml``."""
    resource = importlib.resources.files(BUNDLED_PACKAGE) / "configs" / name
    if not resource.is_file():
        raise FileNotFoundError(f"no bundled config {name!r} in the installed package "
                                f"({BUNDLED_PACKAGE}/configs); reinstall s2dit")
    return str(resource)


def _read_toml(url: str) -> dict[str, Any]:
    try:
        with fsspec.open(url, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise RunConfigError(f"run config {url} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise RunConfigError(f"run config {url} is not valid TOML: {exc}") from None


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        both_tables = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both_tables else value
    return out


def _beside(url: str, include: str) -> str:
    """``include`` as written if absolute (a path or URL), else relative to ``url``'s folder."""
    if "://" in include or include.startswith("/"):
        return include
    if "://" in url:
        return posixpath.join(posixpath.dirname(url), include)
    return str(Path(url).parent / include)


def _resolve_include(url: str, name: str, section: dict[str, Any]) -> dict[str, Any]:
    include = section.pop("include", None)
    if include is None:
        return section
    if not isinstance(include, str):
        raise RunConfigError(f"[{name}] include in {url} must be a file name, got {include!r}")
    target = _beside(url, include)
    data = _read_toml(target)
    if name not in data:
        tables = sorted(k for k, v in data.items() if isinstance(v, dict))
        raise RunConfigError(f"[{name}] of {url} includes {target}, which has no [{name}] table "
                             f"(it has {tables})")
    base = dict(data[name])
    if "include" in base:
        raise RunConfigError(f"{target} [{name}] includes another file: one level only")
    if name == "job":  # the standalone job's corpus and cache paths; the graph sets its own
        for key in GRAPH_SET_JOB_KEYS:
            base.pop(key, None)
    return _merge(base, section)


def load_run_config(url: str) -> RunConfig:
    data = _read_toml(url)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise RunConfigError(f"unknown sections {unknown} in run config {url}; known: "
                             f"{', '.join(SECTIONS)}")
    sections: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        section = data.get(name, {})
        if not isinstance(section, dict):
            raise RunConfigError(f"{name} in {url} must be a table ([{name}]), got {section!r}")
        sections[name] = _resolve_include(url, name, dict(section))
    bad_run = sorted(set(sections["run"]) - RUN_KEYS)
    if bad_run:
        raise RunConfigError(f"unknown [run] keys {bad_run} in {url}; known: {sorted(RUN_KEYS)}")
    for key in GRAPH_SET_JOB_KEYS:
        if key in data.get("job", {}):
            raise RunConfigError(f"[job] {key} in {url}: the run sets it (the corpus stage's "
                                 "prompts and RUN_DIR/cache); give the corpus in [corpus] and the "
                                 "folder with --out or [run] out")
    if not data.get("corpus"):
        raise RunConfigError(f"run config {url} has no [corpus] section: say kind = 'analytic', "
                             "'inline' (prompts = [...]) or 'file' (source = URL)")
    return RunConfig(source=url, sections=sections)
