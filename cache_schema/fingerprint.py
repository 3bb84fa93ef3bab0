"""Fingerprints (DESIGN 3.2): canonical JSON of everything that changes the teacher's output."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, no NaN: the same value always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def fingerprint_digest(fingerprint: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(fingerprint).encode("utf-8")).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def diff_fingerprints(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Readable lines 'key: A -> B' for every differing (nested) key; empty when equal."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    lines = []
    for key in sorted(set(flat_a) | set(flat_b)):
        va, vb = flat_a.get(key, "<absent>"), flat_b.get(key, "<absent>")
        if va != vb:
            lines.append(f"{key}: {canonical_json(va)} -> {canonical_json(vb)}")
    return lines
