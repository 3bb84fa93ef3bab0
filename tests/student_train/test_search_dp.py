"""The budget-aware DP: exact against brute force, within budgets, monotone, fast."""

from __future__ import annotations

import math
import random
import time

import pytest

from student_train.search.dp import Costs, Option, brute_force, search


def _options(rng):
    return [Option("lcha", rng.uniform(0.5, 2.0), rng.uniform(1, 6), rng.uniform(0.5, 1.0), rng.uniform(0, 5)),
            Option("ssa:1", rng.uniform(1.0, 4.0), rng.uniform(2, 9), rng.uniform(0.7, 1.3), rng.uniform(2, 9)),
            Option("ssa:2", rng.uniform(0.3, 1.5), rng.uniform(1, 4), rng.uniform(0.3, 1.0), rng.uniform(0, 3))]


def _check_fits(result, lat, mem, options, costs):
    by_name = {o.name: o for o in options}
    picks = [by_name[n] for n in result.layout]
    latency = costs.fixed_latency_ms + sum(o.latency_ms for o in picks)
    memory = (costs.fixed_memory_mb + sum(o.memory_mb for o in picks)
              + max([costs.fixed_peak_mb] + [o.peak_mb for o in picks]))
    assert latency <= lat + 1e-9 and memory <= mem + 1e-9
    assert result.latency_ms == pytest.approx(latency) and result.memory_mb == pytest.approx(memory)


@pytest.mark.parametrize("seed", range(16))
def test_dp_matches_brute_force_on_small_spaces(seed):
    rng = random.Random(seed)
    options, max_blocks = _options(rng), rng.randint(3, 6)
    min_blocks = rng.randint(3, max_blocks)
    lat, mem = rng.uniform(2, 12), rng.uniform(8, 40)
    costs = Costs(fixed_latency_ms=rng.uniform(0, 1), fixed_memory_mb=rng.uniform(0, 2),
                  fixed_peak_mb=rng.uniform(0, 4))
    sandwich = seed % 4 != 3
    dp = search(options, max_blocks, lat, mem, min_blocks=min_blocks, costs=costs, sandwich=sandwich)
    ref = brute_force(options, max_blocks, lat, mem, min_blocks=min_blocks, costs=costs, sandwich=sandwich)
    assert (dp is None) == (ref is None)
    if dp is None:
        return
    assert dp.quality == pytest.approx(ref.quality)
    assert dp.quality == pytest.approx(sum({o.name: o.quality for o in options}[n] for n in dp.layout))
    assert min_blocks <= len(dp.layout) <= max_blocks
    _check_fits(dp, lat, mem, options, costs)
    if sandwich:
        kinds = [n.split(":")[0] for n in dp.layout]
        first_ssa, last_ssa = kinds.index("ssa"), len(kinds) - 1 - kinds[::-1].index("ssa")
        assert kinds[0] == "lcha" and kinds[-1] == "lcha"
        assert all(k == "ssa" for k in kinds[first_ssa : last_ssa + 1])  # one contiguous filling


def test_nothing_fits_gives_none():
    options = [Option("lcha", 1.0, 1.0, 1.0), Option("ssa:2", 1.0, 1.0, 1.0)]
    assert search(options, 3, latency_budget_ms=2.5) is None
    assert search(options, 3, latency_budget_ms=10, memory_budget_mb=2.0) is None
    assert search(options, 3, latency_budget_ms=3.0).layout == ("lcha", "ssa:2", "lcha")


def test_monotone_in_both_budgets_and_fast_for_40_blocks():
    # costs shaped like a measured LUT: SSA cheaper with stride, full attention the peak hog
    options = [Option("lcha", 1.0, 0.5, 1.0, 2.0), Option("ssa:1", 2.0, 0.4, 1.2, 6.0),
               Option("ssa:2", 0.6, 0.4, 0.8, 1.5), Option("ssa:4", 0.4, 0.4, 0.6, 1.0)]
    costs = Costs(fixed_latency_ms=1.0, fixed_memory_mb=3.0, fixed_peak_mb=1.2)
    previous = -math.inf
    slowest = 0.0
    for budget in (8, 15, 25, 40, 60):
        t0 = time.perf_counter()
        result = search(options, 40, budget, 30, min_blocks=3, costs=costs)
        slowest = max(slowest, time.perf_counter() - t0)
        assert result is not None
        _check_fits(result, budget, 30, options, costs)
        assert result.quality >= previous - 1e-9
        previous = result.quality
    previous = -math.inf
    for memory in (8, 12, 18, 30):
        t0 = time.perf_counter()
        result = search(options, 40, 40, memory, min_blocks=3, costs=costs)
        slowest = max(slowest, time.perf_counter() - t0)
        _check_fits(result, 40, memory, options, costs)
        assert result.quality >= previous - 1e-9
        previous = result.quality
    assert slowest < 1.0, f"40-block search took {slowest:.2f} s"
