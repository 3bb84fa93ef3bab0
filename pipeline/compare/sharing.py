"""Training stages that cells share: a stage is trained once per seed for every variant whose
recipes agree up to it.

A stage-2 ablation (``critic_5 = {train_ar = {critic_steps = 5}}``) changes nothing of S2DiT-KD:
its cell's KD stage, at the same seed, is the same training as s2dit's, and same seed, same bytes
makes it the same checkpoint. So a cell borrows every leading stage whose recipes, this one and
every one before it, equal those of an earlier variant's cell of the same seed (the *owner*: the
first variant in the grid's order with that prefix), and trains only from its first stage of its
own. On configs/compare.toml that is one S2DiT-KD per seed for s2dit and its seven stage-2
variants instead of eight.

The borrowing cell's record says where each borrowed stage came from (``shared``: stage ->
``variant/seed<k>``) and copies the owner's wall time for it, so a variant's training time is
still what it costs to make its student from nothing. A record whose ``shared`` no longer names
the current owner (the grid's variants changed) is trained again (grid.prepare_cell). Side by
side (cells.py), a cell starts only when the cells it borrows from are done.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .grid import Grid


def _prefixes(grid: Grid, variant: str, seed: int) -> list[str]:
    """The cell's recipes up to each stage, as comparable text."""
    configs = [c.to_json() for c in grid.configs(variant, seed)]
    return [json.dumps(configs[: k + 1], sort_keys=True) for k in range(len(configs))]


def stage_owners(grid: Grid, variant: str, seed: int) -> dict[str, str]:
    """Stage name -> the earlier variant whose cell of ``seed`` trains it for this cell, for each
    leading stage this cell borrows (empty: the cell trains every stage itself)."""
    mine = _prefixes(grid, variant, seed)
    others = {v: _prefixes(grid, v, seed) for v in grid.compare.variants if seed in grid.compare.seeds_of(v)}
    owners: dict[str, str] = {}
    for k, training in enumerate(grid.trainings):
        owner = next(v for v, prefixes in others.items() if prefixes[k] == mine[k])
        if owner == variant:
            break
        owners[training.spec.name] = owner
    return owners


def shared_record(grid: Grid, variant: str, seed: int) -> dict[str, str]:
    """What a record's ``shared`` holds for this cell: stage -> ``owner/seed<k>``."""
    return {stage: f"{owner}/seed{seed}" for stage, owner in stage_owners(grid, variant, seed).items()}


def waits_for(grid: Grid, variant: str, seed: int) -> set[tuple[str, int]]:
    """The cells this one borrows stages from (to be done before it starts, side by side)."""
    return {(owner, seed) for owner in stage_owners(grid, variant, seed).values()}
