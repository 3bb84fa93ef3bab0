"""Teachers: Wan 2.2 through diffusers, and the analytic oracle. ``build_teacher`` by spec."""

from __future__ import annotations

from typing import Any

from .base import EncodedText, Teacher


def build_teacher(spec: str, **config: Any) -> Teacher:
    """``analytic`` | ``wan-tiny`` | ``wan:<local dir or hub id>``; config are keyword settings."""
    if spec == "analytic":
        from .analytic import AnalyticConfig, AnalyticTeacher

        return AnalyticTeacher(AnalyticConfig(**config))
    if spec == "wan-tiny":
        from .wan import WanTeacher

        return WanTeacher.tiny(**config)
    if spec.startswith("wan:"):
        from .wan import WanTeacher

        return WanTeacher.from_pretrained(spec[4:], **config)
    raise ValueError(f"unknown teacher {spec!r}: use 'analytic', 'wan-tiny' or 'wan:<dir-or-hub-id>'")


__all__ = ["EncodedText", "Teacher", "build_teacher"]
