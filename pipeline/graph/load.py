"""Reading a run config: the TOML file, its includes, its sections checked against the stages'.

The sections are ``[run]`` and one per stage of the run graph (``stages.sections()``, read at
each load), so a new stage's section is known here without being listed.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

from cache_schema.config_file import ConfigFileError, load_toml, resolve_include
from teacher_jobs.config import JobConfig
from teacher_jobs.teachers.registry import make_settings

from .config import GRAPH_SET_JOB_KEYS, RUN_KEYS, RunConfig, RunConfigError, refuse_unknown_keys
from .overrides import set_override
from .stage import check_section
from .stages import graph_stages, sections, seeded_sections


def _read_toml(url: str) -> dict[str, Any]:
    """A run config: a regular file of at most 1 MiB (cache_schema.config_file)."""
    try:
        return load_toml(url, "run config")
    except (FileNotFoundError, ConfigFileError) as exc:
        raise RunConfigError(str(exc)) from None


def _resolve_include(url: str, name: str, section: dict[str, Any]) -> dict[str, Any]:
    """``[name]`` with its include resolved (cache_schema.config_file, as `s2dit train` and
    `s2dit cache generate` do); an included [job]'s corpus and cache paths are dropped: the graph
    sets its own."""
    drop = GRAPH_SET_JOB_KEYS if name == "job" else ()
    try:
        return resolve_include(url, name, section, drop=drop)
    except (FileNotFoundError, ConfigFileError) as exc:
        raise RunConfigError(str(exc)) from None


def load_run_config(url: str, overrides: Sequence[str] = ()) -> RunConfig:
    """The run config at ``url``, includes resolved, then ``--set SECTION.KEY=VALUE``
    ``overrides`` (each checked on its own, so an error names it)."""
    data = _read_toml(url)
    known = sections()
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RunConfigError(f"unknown sections {unknown} in run config {url}; known: "
                             f"{', '.join(known)}")
    tables: dict[str, dict[str, Any]] = {}
    for name in known:
        section = data.get(name, {})
        if not isinstance(section, dict):
            raise RunConfigError(f"{name} in {url} must be a table ([{name}]), got {section!r}")
        tables[name] = _resolve_include(url, name, dict(section))
    for key in GRAPH_SET_JOB_KEYS:
        if key in data.get("job", {}):
            raise RunConfigError(f"[job] {key} in {url}: the run sets it (the corpus stage's "
                                 "prompts and RUN_DIR/cache); give the corpus in [corpus] and the "
                                 "folder with --out or [run] out")
    config = RunConfig(source=url, sections=tables, seeded=seeded_sections())
    try:
        check_keys(config, ("run", "job"))
    except ValueError as exc:
        raise RunConfigError(f"run config {url}: {exc}") from None
    if not data.get("corpus"):
        raise RunConfigError(f"run config {url} has no [corpus] section: say kind = 'analytic', "
                             "'inline' (prompts = [...]) or 'file' (source = URL)")
    apply_overrides(config, overrides)
    return config


def apply_overrides(config: RunConfig, overrides: Sequence[str]) -> None:
    """``--set SECTION.KEY=VALUE`` overrides (``overrides``) applied to ``config`` in order, each
    checked by the validators of its section's stages at once: an error names the override.
    A section that was wrong before the override is blamed on the config, as the run would.
    A section is checked with every other section as all the overrides leave it, so a check
    that reads another section (``[eval] guidance`` against the training stages'
    ``cond_dropout``) does not depend on the order of the flags."""
    known = sections()
    before = copy.deepcopy(config.sections)
    texts_of: dict[str, list[str]] = {}
    for text in overrides:  # all of them first (a malformed one is refused here, by name)
        texts_of.setdefault(set_override(config, text, known), []).append(text)
    after = config.sections
    try:
        for section, texts in texts_of.items():
            config.sections = {k: v for k, v in after.items() if k != section}
            if section in before:
                config.sections[section] = copy.deepcopy(before[section])
            if section in known:
                _check_section(config, section, f"{config.source} [{section}]")
            for text in texts:
                set_override(config, text, known)
                _check_section(config, section, f"--set {text}")
    finally:
        config.sections = after


def _check_section(config: RunConfig, section: str, blame: str) -> None:
    try:
        check_keys(config, (section,))
        enabled = config.sections.get(section, {}).get("enabled", True)
        if not isinstance(enabled, bool):
            raise RunConfigError(f"[{section}] enabled must be true or false, got {enabled!r}")
        if section != "run":  # no stage's: check_keys did it
            check_section(config, section, graph_stages())
    except (ValueError, TypeError) as exc:
        raise RunConfigError(f"{blame}: {exc}") from None


def check_keys(config: RunConfig, sections: Sequence[str]) -> None:
    """The keys of ``[run]`` and ``[job]`` (with ``[job.teacher]``) by name; the stages' checks
    (``Stage.check``, run before any stage) parse the sections into their typed configs."""
    if "run" in sections:
        refuse_unknown_keys("run", config.run, RUN_KEYS)
    if "job" in sections:
        job = config.section("job")
        refuse_unknown_keys("job", job, (f.name for f in dataclasses.fields(JobConfig)
                                         if f.name not in GRAPH_SET_JOB_KEYS))
        if isinstance(job.get("teacher"), dict):
            make_settings(job["teacher"], where="[job.teacher]")
