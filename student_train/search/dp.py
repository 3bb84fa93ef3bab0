"""Budget-aware layout search (DESIGN 5): an exact knapsack-style dynamic programme.

A layout is a sequence of ``num_blocks`` slots; each slot takes one option (``lcha``,
``ssa:2``, ...) with a measured latency, a peak-memory contribution and a quality proxy. The
sandwich shape is enforced by a phase automaton: LCHA top slice, SSA filling, LCHA bottom
slice (each at least one block). Latency and memory are summed on integer grids (costs rounded
up to the resolution, so a returned layout always fits the real budget); the DP is exact on that
grid, which ``brute_force`` checks on small spaces.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

NEG = -np.inf


@dataclass(frozen=True, slots=True)
class Option:
    name: str  # "lcha" or "ssa:<stride>"
    latency_ms: float
    memory_mb: float
    quality: float

    @property
    def kind(self) -> str:
        return self.name.split(":")[0]


@dataclass(frozen=True, slots=True)
class SearchResult:
    layout: tuple[str, ...]
    quality: float
    latency_ms: float
    memory_mb: float


def _phase_after(phase: int, kind: str) -> int | None:
    """0: top LCHA slice, 1: SSA filling, 2: bottom LCHA slice; None: not a sandwich."""
    if phase == 0:
        return 0 if kind == "lcha" else 1
    if phase == 1:
        return 1 if kind == "ssa" else 2
    return 2 if kind == "lcha" else None


def _grid(options, latency_res, memory_res):
    lat = [math.ceil(o.latency_ms / latency_res - 1e-9) for o in options]
    mem = [math.ceil(o.memory_mb / memory_res - 1e-9) for o in options]
    return lat, mem


def search(options: list[Option], num_blocks: int, latency_budget_ms: float,
           memory_budget_mb: float = math.inf, *, latency_res: float = 0.05,
           memory_res: float = 0.5, sandwich: bool = True) -> SearchResult | None:
    """The best layout under both budgets, or None when nothing fits."""
    lat, mem = _grid(options, latency_res, memory_res)
    lat_cap = int(math.floor(latency_budget_ms / latency_res + 1e-9))
    mem_cap = (int(math.floor(memory_budget_mb / memory_res + 1e-9))
               if math.isfinite(memory_budget_mb) else sum(max(mem) for _ in range(num_blocks)))
    phases = 3 if sandwich else 1
    # best[phase, l, m]: max quality with latency l and memory m used (exact grid values)
    best = np.full((phases, lat_cap + 1, mem_cap + 1), NEG)
    back = []
    best[0, 0, 0] = 0.0
    start_phase = np.zeros(phases, bool)
    start_phase[0] = True
    for slot in range(num_blocks):
        new = np.full_like(best, NEG)
        choice = np.full(best.shape, -1, dtype=np.int32)  # option index, and source phase below
        source = np.full(best.shape, -1, dtype=np.int8)
        for p in range(phases):
            for oi, opt in enumerate(options):
                q = _phase_after(p, opt.kind) if sandwich else 0
                if q is None or (sandwich and slot == 0 and opt.kind != "lcha"):
                    continue
                dl, dm = lat[oi], mem[oi]
                if dl > lat_cap or dm > mem_cap:
                    continue
                cand = best[p, : lat_cap + 1 - dl, : mem_cap + 1 - dm] + opt.quality
                target = new[q, dl:, dm:]
                better = cand > target
                np.copyto(target, cand, where=better)
                np.copyto(choice[q, dl:, dm:], oi, where=better)
                np.copyto(source[q, dl:, dm:], p, where=better)
        back.append((choice, source))
        best = new
    final = best[2] if sandwich else best[0]
    if not np.isfinite(final).any():
        return None
    l, m = np.unravel_index(np.argmax(final), final.shape)
    quality = float(final[l, m])
    phase = 2 if sandwich else 0
    picks = []
    for choice, source in reversed(back):
        oi = int(choice[phase, l, m])
        picks.append(options[oi])
        phase_prev = int(source[phase, l, m])
        l, m, phase = l - lat[oi], m - mem[oi], phase_prev
    picks.reverse()
    return SearchResult(tuple(o.name for o in picks), quality,
                        sum(o.latency_ms for o in picks), sum(o.memory_mb for o in picks))


def brute_force(options: list[Option], num_blocks: int, latency_budget_ms: float,
                memory_budget_mb: float = math.inf, *, latency_res: float = 0.05,
                memory_res: float = 0.5, sandwich: bool = True) -> SearchResult | None:
    """Exhaustive reference on the same grid (exponential: small spaces only)."""
    lat, mem = _grid(options, latency_res, memory_res)
    lat_cap = math.floor(latency_budget_ms / latency_res + 1e-9)
    mem_cap = math.floor(memory_budget_mb / memory_res + 1e-9) if math.isfinite(memory_budget_mb) else math.inf
    best = None
    for combo in itertools.product(range(len(options)), repeat=num_blocks):
        if sandwich:
            phase = 0 if options[combo[0]].kind == "lcha" else None
            for oi in combo[1:]:
                phase = None if phase is None else _phase_after(phase, options[oi].kind)
            if phase != 2:
                continue
        if sum(lat[i] for i in combo) > lat_cap or sum(mem[i] for i in combo) > mem_cap:
            continue
        quality = sum(options[i].quality for i in combo)
        if best is None or quality > best.quality + 1e-12:
            picks = [options[i] for i in combo]
            best = SearchResult(tuple(o.name for o in picks), quality,
                                sum(o.latency_ms for o in picks), sum(o.memory_mb for o in picks))
    return best
