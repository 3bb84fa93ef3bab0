"""Teachers behind one registry (registry.py): each kind is a typed ``[job.teacher]`` section
(spec.py) in its own file. ``build_teacher`` builds one directly from a spec and teacher
arguments (tests, sampling); jobs go through their section."""

from __future__ import annotations

from typing import Any

from .base import EncodedText, Teacher
from .registry import TEACHERS, make_settings, register_teacher, settings_class, spec_values
from .spec import DriverPlan, TeacherSettings, VideoSize


def build_teacher(spec: str, **config: Any) -> Teacher:
    """``analytic`` | ``wan-tiny`` | ``wan:<local dir or hub id>`` with the teacher class's own
    keyword arguments (``num_steps``, ``shift``, ...)."""
    values = spec_values(spec)
    if values["kind"] == "analytic":
        from .analytic import AnalyticConfig, AnalyticTeacher

        return AnalyticTeacher(AnalyticConfig(**config))
    from .wan import WanTeacher

    if values["source"] == "tiny-random":
        return WanTeacher.tiny(**config)
    return WanTeacher.from_pretrained(values["source"], **config)


__all__ = [
    "TEACHERS",
    "DriverPlan",
    "EncodedText",
    "Teacher",
    "TeacherSettings",
    "VideoSize",
    "build_teacher",
    "make_settings",
    "register_teacher",
    "settings_class",
    "spec_values",
]
