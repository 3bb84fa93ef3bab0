"""Budget-aware layout search (DESIGN 5): an exact knapsack-style dynamic programme.

A layout is a sequence of between ``min_blocks`` and ``max_blocks`` blocks, each one of the
options (``lcha``, ``ssa:1``, ``ssa:2``, ...) of a look-up table measured on the target device
(search/profile.py). Each option has a latency, a persistent memory (weights and streaming
state: adds up over blocks), a transient peak (activations of one block: only the largest
counts, blocks run one after another) and a quality proxy (per-kind scores, or scores measured
by short proxy trainings). The search maximises the summed quality subject to

    fixed_latency + sum(latency)                        <= latency budget
    fixed_memory + sum(memory) + max(peak, fixed_peak)  <= memory budget

and, by default, the sandwich shape: an LCHA top slice, an SSA filling, an LCHA bottom slice
(each at least one block), enforced by a three-phase automaton.

Exactness: costs are rounded *up* to a fixed grid (``latency_res``, ``memory_res``, derived from
the options, never from the budget, so that a larger budget never loses a layout: the optimum is
monotone in the budget), so a returned layout always fits the real budgets. On that grid the
DP is exact: the max term is handled by one additive DP per candidate peak value (the layout's
own maximum is one of them), and ``brute_force`` enumerates the same space to check it.
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
    memory_mb: float  # persistent: parameters + streaming state
    quality: float
    peak_mb: float = 0.0  # transient activations while the block runs

    @property
    def kind(self) -> str:
        return self.name.split(":")[0]


@dataclass(frozen=True, slots=True)
class Costs:
    """Costs outside the searched blocks (embeddings, head) and the rounding grid."""

    fixed_latency_ms: float = 0.0
    fixed_memory_mb: float = 0.0
    fixed_peak_mb: float = 0.0
    latency_res: float | None = None  # None: the cheapest option's latency / 4
    memory_res: float | None = None  # None: the smallest option's memory / 2


@dataclass(frozen=True, slots=True)
class SearchResult:
    layout: tuple[str, ...]
    quality: float
    latency_ms: float  # predicted, fixed costs included
    memory_mb: float  # predicted peak total, fixed costs included

    def to_json(self) -> dict:
        return {"layout": list(self.layout), "quality": self.quality,
                "predicted_latency_ms": self.latency_ms, "predicted_memory_mb": self.memory_mb}


# -- the sandwich automaton ----------------------------------------------------------------
START, TOP, FILL, BOTTOM = -1, 0, 1, 2


def _next_phase(phase: int, kind: str, sandwich: bool) -> int | None:
    """Phase after appending a block of ``kind``; None when the layout would not be a sandwich."""
    if not sandwich:
        return TOP
    if phase in (START, TOP):
        return TOP if kind == "lcha" else (FILL if phase == TOP else None)
    if phase == FILL:
        return FILL if kind == "ssa" else BOTTOM
    return BOTTOM if kind == "lcha" else None


def _resolutions(options: list[Option], costs: Costs) -> tuple[float, float]:
    lat = costs.latency_res or max(min(o.latency_ms for o in options), 1e-6) / 4
    positive = [o.memory_mb for o in options if o.memory_mb > 0]
    mem = costs.memory_res or (min(positive) / 2 if positive else 1.0)
    return lat, mem


def _units(value: float, res: float) -> int:
    return max(0, math.ceil(value / res - 1e-9))


def _predicted(picks: list[Option], costs: Costs) -> tuple[float, float]:
    latency = costs.fixed_latency_ms + sum(o.latency_ms for o in picks)
    memory = (costs.fixed_memory_mb + sum(o.memory_mb for o in picks)
              + max([costs.fixed_peak_mb] + [o.peak_mb for o in picks]))
    return latency, memory


def search(options: list[Option], max_blocks: int, latency_budget_ms: float,
           memory_budget_mb: float = math.inf, *, min_blocks: int | None = None,
           costs: Costs = Costs(), sandwich: bool = True) -> SearchResult | None:
    """The best layout under both budgets, or None when nothing fits."""
    min_blocks = max_blocks if min_blocks is None else min_blocks
    if not options or not 1 <= min_blocks <= max_blocks:
        raise ValueError(f"need options and 1 <= min_blocks ({min_blocks}) <= max_blocks ({max_blocks})")
    lat_res, mem_res = _resolutions(options, costs)
    lat = [_units(o.latency_ms, lat_res) for o in options]
    mem = [_units(o.memory_mb, mem_res) for o in options]
    lat_cap = math.floor((latency_budget_ms - costs.fixed_latency_ms) / lat_res + 1e-9)
    lat_cap = min(lat_cap, max_blocks * max(lat))  # nothing reaches further
    best: tuple | None = None
    # One additive DP per candidate value of the largest transient peak.
    for peak in sorted({max(costs.fixed_peak_mb, o.peak_mb) for o in options}):
        allowed = [i for i, o in enumerate(options) if o.peak_mb <= peak]
        if math.isfinite(memory_budget_mb):
            mem_cap = math.floor((memory_budget_mb - costs.fixed_memory_mb - peak) / mem_res + 1e-9)
            mem_cap = min(mem_cap, max_blocks * max(mem))
            mem_units = mem
        else:  # no memory budget: collapse that axis
            mem_cap, mem_units = 0, [0] * len(options)
        if lat_cap < 0 or mem_cap < 0 or not allowed:
            continue
        found = _dp(options, allowed, lat, mem_units, lat_cap, mem_cap, min_blocks, max_blocks, sandwich)
        if found is None:
            continue
        quality, picks = found
        latency, memory = _predicted(picks, costs)
        if best is None or quality > best[0] + 1e-12 or (abs(quality - best[0]) <= 1e-12 and latency < best[1]):
            best = (quality, latency, memory, picks)
    if best is None:
        return None
    quality, latency, memory, picks = best
    return SearchResult(tuple(o.name for o in picks), quality, latency, memory)


def _dp(options, allowed, lat, mem, lat_cap, mem_cap, min_blocks, max_blocks, sandwich):
    """Knapsack over (phase, latency units, memory units), layer by layer (layer k = k blocks).

    best[k][p, l, m] is the highest quality of a k-block prefix ending in phase p that uses
    exactly l latency units and m memory units (-inf: unreachable). The layers are kept
    (float32) and the path is recovered by re-deriving which move produced each cell.
    """
    phases = 3 if sandwich else 1
    final = BOTTOM if sandwich else TOP
    shape = (phases, lat_cap + 1, mem_cap + 1)
    quality = [np.float32(o.quality) for o in options]
    sources = {TOP: [TOP], FILL: [TOP, FILL], BOTTOM: [FILL, BOTTOM]} if sandwich else {TOP: [TOP]}
    layers, answer = [], None
    for k in range(1, max_blocks + 1):
        new = np.full(shape, NEG, dtype=np.float32)
        if k == 1:
            for oi in allowed:
                dst = _next_phase(START, options[oi].kind, sandwich)
                if dst is not None and lat[oi] <= lat_cap and mem[oi] <= mem_cap:
                    new[dst, lat[oi], mem[oi]] = max(new[dst, lat[oi], mem[oi]], quality[oi])
        else:
            prev = layers[-1]
            for dst, srcs in sources.items():
                # the best predecessor over the allowed source phases, then one pass per option
                src = prev[srcs[0]] if len(srcs) == 1 else np.maximum(prev[srcs[0]], prev[srcs[1]])
                for oi in allowed:
                    kind_ok = _next_phase(srcs[-1], options[oi].kind, sandwich) == dst
                    dl, dm = lat[oi], mem[oi]
                    if not kind_ok or dl > lat_cap or dm > mem_cap:
                        continue
                    target = new[dst, dl:, dm:]
                    np.maximum(target, src[: lat_cap + 1 - dl, : mem_cap + 1 - dm] + quality[oi], out=target)
        layers.append(new)
        if k >= min_blocks and np.isfinite(new[final]).any():
            q = new[final].max()
            if answer is None or q > answer[0]:
                cells = np.argwhere(new[final] == q)  # tie-break: the cheapest latency
                l, m = min(map(tuple, cells))
                answer = (q, k, int(l), int(m))
    if answer is None:
        return None
    _, k, l, m = answer
    phase, picks = final, []
    for layer in range(k - 1, -1, -1):
        value = layers[layer][phase, l, m]
        for oi in allowed:
            l0, m0 = l - lat[oi], m - mem[oi]
            if l0 < 0 or m0 < 0:
                continue
            if layer == 0:
                src_ok = _next_phase(START, options[oi].kind, sandwich) == phase and l0 == 0 and m0 == 0 \
                    and quality[oi] == value
                src = START
            else:
                src = next((p for p in sources[phase] if _next_phase(p, options[oi].kind, sandwich) == phase
                            and layers[layer - 1][p, l0, m0] + quality[oi] == value), None)
                src_ok = src is not None
            if src_ok:
                break
        else:  # pragma: no cover - the layers always hold a consistent path
            raise RuntimeError("layout search: could not trace the optimal path back")
        picks.append(options[oi])
        l, m, phase = l0, m0, src
    picks.reverse()
    return float(sum(o.quality for o in picks)), picks


def brute_force(options: list[Option], max_blocks: int, latency_budget_ms: float,
                memory_budget_mb: float = math.inf, *, min_blocks: int | None = None,
                costs: Costs = Costs(), sandwich: bool = True) -> SearchResult | None:
    """Exhaustive reference on the same rounded costs (exponential: small spaces only)."""
    min_blocks = max_blocks if min_blocks is None else min_blocks
    lat_res, mem_res = _resolutions(options, costs)
    best = None
    for n in range(min_blocks, max_blocks + 1):
        for combo in itertools.product(options, repeat=n):
            phase = START
            for o in combo:
                phase = None if phase is None else _next_phase(phase, o.kind, sandwich)
            if phase != (BOTTOM if sandwich else TOP):
                continue
            peak = max([costs.fixed_peak_mb] + [o.peak_mb for o in combo])
            lat_units = sum(_units(o.latency_ms, lat_res) for o in combo)
            if lat_units > math.floor((latency_budget_ms - costs.fixed_latency_ms) / lat_res + 1e-9):
                continue
            if math.isfinite(memory_budget_mb):
                mem_units = sum(_units(o.memory_mb, mem_res) for o in combo)
                if mem_units > math.floor((memory_budget_mb - costs.fixed_memory_mb - peak) / mem_res + 1e-9):
                    continue
            quality = sum(o.quality for o in combo)
            if best is None or quality > best.quality + 1e-12:
                latency, memory = _predicted(list(combo), costs)
                best = SearchResult(tuple(o.name for o in combo), quality, latency, memory)
    return best
