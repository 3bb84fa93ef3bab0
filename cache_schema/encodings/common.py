"""Helpers shared by both encodings: field selection and step slicing."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..fields import FIELD_BY_NAME, FIELD_NAMES, CacheLayout


def resolve_fields(fields: Iterable[str] | None) -> tuple[str, ...]:
    if fields is None:
        return FIELD_NAMES
    fields = tuple(fields)
    unknown = [f for f in fields if f not in FIELD_BY_NAME]
    if unknown:
        raise KeyError(f"unknown cache fields {unknown}; known: {', '.join(FIELD_NAMES)}")
    # sample_id always travels with a record so errors and indexes can name it.
    return fields if "sample_id" in fields else ("sample_id", *fields)


def step_positions(layout: CacheLayout, steps: Sequence[int] | None) -> list[int] | None:
    """Positions along S of the requested solver steps (KeyError names a step not stored)."""
    if steps is None:
        return None
    return [layout.step_position(int(s)) for s in steps]


def slice_steps(record: dict[str, Any], positions: list[int] | None) -> dict[str, Any]:
    if positions is None:
        return record
    for name, value in record.items():
        spec = FIELD_BY_NAME.get(name)
        if spec is not None and spec.per_step and isinstance(value, np.ndarray):
            record[name] = value[positions]
    return record
