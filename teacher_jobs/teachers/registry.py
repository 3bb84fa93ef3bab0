"""One registry of teacher kinds, keyed by the name configs and manifests carry.

``register_teacher(SettingsClass)`` adds a kind (each kind's file calls it once): its job side
and its sampling side (spec.py). Configs name it with ``kind = "..."`` in ``[job.teacher]`` or
``--teacher SPEC``; caches name it in ``fingerprint["teacher"]``, from which
``open_sampling_side`` rebuilds what sampling and reporting a student need.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cache_schema.registry import Registry
from cache_schema.typed_config import ConfigError, did_you_mean

from .sampling import SamplingSide
from .spec import TeacherSettings

TEACHERS: Registry[type[TeacherSettings]] = Registry(
    "teacher kind", what="a [job.teacher] section or a cache fingerprint",
    hint="a TeacherSettings subclass and one register_teacher call add one",
    describe=lambda cls: f"by {cls.__qualname__}")


def register_teacher(settings: type[TeacherSettings]) -> type[TeacherSettings]:
    """Add a teacher kind (usable as a class decorator); a name is taken once."""
    if settings.kind in TEACHERS and TEACHERS.get(settings.kind) is settings:
        return settings
    return TEACHERS.register(settings.kind, settings)


def _ensure_builtin() -> None:
    from . import analytic_settings, wan_settings  # noqa: F401  (they register themselves)


def teacher_kinds() -> list[str]:
    _ensure_builtin()
    return sorted(TEACHERS.names())


def settings_class(kind: str) -> type[TeacherSettings]:
    _ensure_builtin()
    if kind not in TEACHERS:
        raise ValueError(f"unknown teacher kind {kind!r}; registered kinds: {', '.join(teacher_kinds())}")
    return TEACHERS.get(kind)


def spec_values(spec: str) -> dict[str, Any]:
    """``--teacher SPEC`` -> section values with ``kind`` (each kind parses its own specs)."""
    _ensure_builtin()
    for kind, cls in zip(TEACHERS.names(), TEACHERS.values()):
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
        hints = "".join(did_you_mean(k, known) for k in unknown)
        raise ValueError(f"the {cls.kind} teacher has no setting(s) {unknown} (in {where}){hints}; "
                         f"its settings: {', '.join(sorted(known))}")
    return cls(**values)


def _cache_teacher(fingerprint_or_kind: dict[str, Any] | str) -> type[TeacherSettings]:
    kind = (fingerprint_or_kind.get("teacher") if isinstance(fingerprint_or_kind, dict)
            else fingerprint_or_kind)
    _ensure_builtin()
    if kind not in TEACHERS:
        raise ValueError(f"cannot sample for a cache made by teacher {kind!r}: no such teacher "
                         f"kind is registered ({', '.join(teacher_kinds())})")
    return TEACHERS.get(kind)


def has_oracle(fingerprint_or_kind: dict[str, Any] | str) -> bool:
    """Whether the teacher that made a cache (its fingerprint, or the name it carries) has an
    oracle that scores samples; an unregistered teacher has none. Loads nothing."""
    try:
        return _cache_teacher(fingerprint_or_kind).has_oracle
    except ValueError:
        return False


def open_sampling_side(fingerprint: dict[str, Any], *, source: str | None = None,
                       device: str = "cpu", dtype: str = "float32") -> SamplingSide:
    """The sampling side of the teacher that made a cache; ``source`` relocates its weights."""
    return _cache_teacher(fingerprint).sampling_side(fingerprint, source=source, device=device,
                                                     dtype=dtype)
