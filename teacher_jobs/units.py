"""Work units: deterministic groups of corpus entries, one cache shard each.

A unit's name hashes its entries, so rerunning the same corpus maps to the same shard names
(resume skips committed ones) and a changed corpus never reuses a stale shard.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .corpus import Entry


@dataclass(frozen=True, slots=True)
class Unit:
    index: int
    name: str
    entries: tuple[Entry, ...]


def plan_units(entries: list[Entry], samples_per_shard: int) -> list[Unit]:
    units = []
    for index, start in enumerate(range(0, len(entries), samples_per_shard)):
        chunk = tuple(entries[start : start + samples_per_shard])
        digest = hashlib.sha256("\x1e".join(f"{e.prompt}\x1f{e.seed}" for e in chunk).encode())
        units.append(Unit(index, f"u{index:05d}-{digest.hexdigest()[:10]}", chunk))
    return units
