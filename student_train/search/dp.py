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

import dataclasses
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


def cheapest(options: list[Option], max_blocks: int, memory_budget_mb: float = math.inf, *,
             min_blocks: int | None = None, costs: Costs = Costs(), sandwich: bool = True,
             by: str = "latency") -> SearchResult | None:
    """The layout of least latency (``by="latency"``) under the memory budget alone, or of least
    persistent memory (``by="memory"``), over the same space as ``search`` (block counts,
    sandwich, rounding grid); its ``quality`` is the real proxy. None: no layout of the space
    fits (for latency: not even the memory budget). What a refused search tells the user."""
    cost = {"latency": lambda o: o.latency_ms, "memory": lambda o: o.memory_mb}[by]
    flipped = [dataclasses.replace(o, quality=-cost(o)) for o in options]  # max quality = least cost
    lat_res, _ = _resolutions(options, costs)
    unbounded = costs.fixed_latency_ms + max_blocks * (max(o.latency_ms for o in options) + lat_res) + lat_res
    found = search(flipped, max_blocks, unbounded, memory_budget_mb if by == "latency" else math.inf,
                   min_blocks=min_blocks, costs=costs, sandwich=sandwich)
    if found is None:
        return None
    quality = {o.name: o.quality for o in options}
    return dataclasses.replace(found, quality=sum(quality[name] for name in found.layout))


@dataclass(frozen=True, slots=True)
class _Space:
    """What every step of the DP reads: the allowed options, their costs in grid units, the caps
    and the sandwich automaton's moves."""

    options: list[Option]
    allowed: list[int]  # indices of the options under the candidate peak
    lat: list[int]
    mem: list[int]
    lat_cap: int
    mem_cap: int
    sandwich: bool
    quality: list[np.float32]  # the layers' dtype, so that the trace-back compares exactly
    sources: dict[int, list[int]]  # phase -> the phases the block before may end in

    @property
    def final(self) -> int:
        return BOTTOM if self.sandwich else TOP

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3 if self.sandwich else 1, self.lat_cap + 1, self.mem_cap + 1)


SANDWICH_SOURCES = {TOP: [TOP], FILL: [TOP, FILL], BOTTOM: [FILL, BOTTOM]}


def _dp(options, allowed, lat, mem, lat_cap, mem_cap, min_blocks, max_blocks, sandwich):
    """Knapsack over (phase, latency units, memory units), layer by layer (layer k = k blocks).

    best[k][p, l, m] is the highest quality of a k-block prefix ending in phase p that uses
    exactly l latency units and m memory units (-inf: unreachable). The layers are kept
    (float32) and the path is recovered by re-deriving which move produced each cell.
    """
    space = _Space(options, allowed, lat, mem, lat_cap, mem_cap, sandwich,
                   quality=[np.float32(o.quality) for o in options],
                   sources=SANDWICH_SOURCES if sandwich else {TOP: [TOP]})
    layers, answer = [], None
    for k in range(1, max_blocks + 1):
        layers.append(_first_layer(space) if k == 1 else _next_layer(space, layers[-1]))
        if k >= min_blocks:
            answer = _better_answer(answer, layers[-1][space.final], k)
    if answer is None:
        return None
    _, k, l, m = answer
    picks = _trace_back(space, layers, k, l, m)
    return float(sum(o.quality for o in picks)), picks


def _first_layer(space: _Space) -> np.ndarray:
    """Layer 1: every single block the automaton accepts as a start."""
    new = np.full(space.shape, NEG, dtype=np.float32)
    for oi in space.allowed:
        dst = _next_phase(START, space.options[oi].kind, space.sandwich)
        dl, dm = space.lat[oi], space.mem[oi]
        if dst is not None and dl <= space.lat_cap and dm <= space.mem_cap:
            new[dst, dl, dm] = max(new[dst, dl, dm], space.quality[oi])
    return new


def _next_layer(space: _Space, prev: np.ndarray) -> np.ndarray:
    """Layer k + 1 from layer k: append each allowed block to every reachable prefix."""
    new = np.full(space.shape, NEG, dtype=np.float32)
    for dst, srcs in space.sources.items():
        # the best predecessor over the allowed source phases, then one pass per option
        src = prev[srcs[0]] if len(srcs) == 1 else np.maximum(prev[srcs[0]], prev[srcs[1]])
        for oi in space.allowed:
            kind_ok = _next_phase(srcs[-1], space.options[oi].kind, space.sandwich) == dst
            dl, dm = space.lat[oi], space.mem[oi]
            if not kind_ok or dl > space.lat_cap or dm > space.mem_cap:
                continue
            target = new[dst, dl:, dm:]
            np.maximum(target, src[: space.lat_cap + 1 - dl, : space.mem_cap + 1 - dm] + space.quality[oi],
                       out=target)
    return new


def _better_answer(answer: tuple | None, final: np.ndarray, k: int) -> tuple | None:
    """``answer`` or the best complete k-block layout of ``final``, whichever is higher (an
    earlier, shallower layout wins a tie; within a layer the cheapest latency does)."""
    if not np.isfinite(final).any():
        return answer
    q = final.max()
    if answer is not None and not q > answer[0]:
        return answer
    cells = np.argwhere(final == q)
    l, m = min(map(tuple, cells))
    return (q, k, int(l), int(m))


def _trace_back(space: _Space, layers: list[np.ndarray], k: int, l: int, m: int) -> list[Option]:
    """The k blocks whose path ends in cell (final phase, l, m), first block first."""
    phase, picks = space.final, []
    for layer in range(k - 1, -1, -1):
        oi, src = _last_move(space, layers, layer, phase, l, m)
        picks.append(space.options[oi])
        l, m, phase = l - space.lat[oi], m - space.mem[oi], src
    picks.reverse()
    return picks


def _last_move(space: _Space, layers: list[np.ndarray], layer: int, phase: int, l: int,
               m: int) -> tuple[int, int]:
    """(option, phase before it) of a move that produced ``layers[layer][phase, l, m]``."""
    value = layers[layer][phase, l, m]
    for oi in space.allowed:
        l0, m0 = l - space.lat[oi], m - space.mem[oi]
        if l0 < 0 or m0 < 0:
            continue
        src = _source_phase(space, layers, layer, phase, oi, l0, m0, value)
        if src is not None:
            return oi, src
    # unreachable: the layers always hold a consistent path
    raise RuntimeError("layout search: could not trace the optimal path back")  # pragma: no cover


def _source_phase(space: _Space, layers: list[np.ndarray], layer: int, phase: int, oi: int,
                  l0: int, m0: int, value: np.float32) -> int | None:
    """The phase before option ``oi`` if appending it to cell (l0, m0) gives ``value`` in
    ``phase``; None when it does not."""
    kind, quality = space.options[oi].kind, space.quality[oi]
    if layer == 0:
        start_ok = (_next_phase(START, kind, space.sandwich) == phase and l0 == 0 and m0 == 0
                    and quality == value)
        return START if start_ok else None
    return next((p for p in space.sources[phase] if _next_phase(p, kind, space.sandwich) == phase
                 and layers[layer - 1][p, l0, m0] + quality == value), None)


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
