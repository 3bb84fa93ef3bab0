"""One registry of teacher kinds, keyed by the name configs and manifests carry.

``register_teacher(SettingsClass)`` adds a kind (each kind's file calls it once); configs
name it with ``kind = "..."`` in ``[job.teacher]`` or ``--teacher SPEC``; caches name it in
``fingerprint["teacher"]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cache_schema.typed_config import ConfigError

from .spec import TeacherSettings

TEACHERS: dict[str, type[TeacherSettings]] = {}


def register_teacher(settings: type[TeacherSettings]) -> type[TeacherSettings]:
    """Add a teacher kind (usable as a class decorator); a name is taken once."""
    if settings.kind in TEACHERS and TEACHERS[settings.kind] is not settings:
        raise ValueError(f"teacher kind {settings.kind!r} is already registered "
                         f"by {TEACHERS[settings.kind].__qualname__}")
    TEACHERS[settings.kind] = settings
    return settings


def _ensure_builtin() -> None:
    from . import analytic_settings, wan_settings  # noqa: F401  (they register themselves)


def teacher_kinds() -> list[str]:
    _ensure_builtin()
    return sorted(TEACHERS)


def settings_class(kind: str) -> type[TeacherSettings]:
    _ensure_builtin()
    if not isinstance(kind, str) or kind not in TEACHERS:
        raise ValueError(f"unknown teacher kind {kind!r}; registered kinds: {', '.join(teacher_kinds())}")
    return TEACHERS[kind]


def spec_values(spec: str) -> dict[str, Any]:
    """``--teacher SPEC`` -> section values with ``kind`` (each kind parses its own specs)."""
    _ensure_builtin()
    for kind, cls in TEACHERS.items():
        values = cls.from_spec(spec)
        if values is not None:
            return {"kind": kind, **values}
    raise ValueError(f"unknown teacher {spec!r}: use one of the kinds {', '.join(teacher_kinds())}"
                     " (e.g. 'analytic', 'wan-tiny' or 'wan:<local dir or hub id>')")


def make_settings(values: dict[str, Any], *, where: str = "[job.teacher]") -> TeacherSettings:
    """A typed section from plain values (TOML table and flags); unknown keys refused."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a table of teacher settings (or a --teacher spec "
                         f"string), got {values!r}")
    values = dict(values)
    try:
        cls = settings_class(values.pop("kind", "analytic"))
    except ValueError as exc:
        raise ValueError(f"{where} kind: {exc}") from None
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"the {cls.kind} teacher has no setting(s) {unknown} (in {where}); "
                         f"its settings: {', '.join(sorted(known))}")
    return cls(**values)
