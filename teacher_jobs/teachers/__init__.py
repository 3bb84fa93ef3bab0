"""Teachers behind one registry (registry.py): each kind is a typed ``[job.teacher]`` section
(spec.py) in its own file, with its sampling side (sampling.py). ``build_teacher`` builds one
directly from a spec and teacher arguments (tests, sampling); jobs go through their section."""

from __future__ import annotations

from typing import Any

from .base import EncodedText, Teacher
from .registry import (
    TEACHERS,
    has_oracle,
    make_settings,
    open_sampling_side,
    register_teacher,
    settings_class,
    spec_values,
)
from .sampling import OracleSide, SamplingSide
from .spec import DriverPlan, TeacherSettings, VideoSize


def build_teacher(spec: str, **config: Any) -> Teacher:
    """``analytic`` | ``wan-tiny`` | ``wan:<local dir or hub id>`` with the teacher class's own
    keyword arguments (``num_steps``, ``shift``, ...)."""
    values = spec_values(spec)
    return settings_class(values.pop("kind")).build_direct(values, **config)


__all__ = [
    "TEACHERS",
    "DriverPlan",
    "EncodedText",
    "OracleSide",
    "SamplingSide",
    "Teacher",
    "TeacherSettings",
    "VideoSize",
    "build_teacher",
    "has_oracle",
    "make_settings",
    "open_sampling_side",
    "register_teacher",
    "settings_class",
    "spec_values",
]
