"""Found variants (pipeline/compare/matching.py): a knob matched to another variant's per-chunk
latency and a layout searched under it, chosen exactly from a fake latency table, recorded in
matching.json and reused while the question is unchanged; bad match / search tables refused by
name; and the real measurement on a tiny model, end to end (structure only: timings are noisy)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from test_report import build_partial_run

from cache_schema.typed_config import ConfigError
from pipeline.compare import CompareConfig, Grid
from pipeline.compare.grid import Training
from pipeline.compare.matching import (
    GUARD_ROUNDS,
    MATCHING,
    ChunkCost,
    bisect_choice,
    choose,
    resolve_variants,
    resolved_grid,
)
from pipeline.graph import load_run_config
from student_train.config import TrainConfig
from student_train.model import StudentConfig
from student_train.self_forcing import ARConfig
from student_train.stages import get_stage

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]
BLOCK_MS = {"lcha": 1.0, "ssa:1": 0.6, "ssa:2": 0.3, "ssa:4": 0.2}  # per forward, fake LUT
FIXED_MS = 2.0  # per chunk outside the blocks, fake
FORWARDS = 5  # TrainConfig's 4 few-step forwards + the commit


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    run, _, _ = build_partial_run(tmp_path_factory.mktemp("matching") / "run", train_classes=3, seeds=1)
    return str(run / "cache@train")


def _grid(cache: str, out: Path, variants: dict, log: list[str] | None = None, cond_dropout: float = 0.0,
          **compare) -> Grid:
    kd = TrainConfig(steps=4, model={"dim": 16, "heads": 2}, cond_dropout=cond_dropout)  # layout lcha, ssa:2, ssa:2, lcha
    ar = ARConfig(steps=1, causal_steps=1, cond_dropout=cond_dropout)
    settings = {"variants": variants, "seeds": (0,), "lengths": (1,), "latency_batch": 2,
                "latency_repeats": 1, **compare}
    return Grid(compare=CompareConfig(**settings), trainings=(Training(get_stage("kd"), kd),
                                                              Training(get_stage("ar"), ar)),
                cache_url=cache, generation=1, out=str(out), log=(log if log is not None else []).append)


class FakeMeasure:
    """Latency from a table: (FIXED_MS + FORWARDS x the blocks' ms) x (dim / 16)^2 per chunk."""

    def __init__(self, calls: list | None = None):
        self.calls = calls if calls is not None else []

    @staticmethod
    def ms(config: StudentConfig) -> float:
        return (FIXED_MS + FORWARDS * sum(BLOCK_MS[b] for b in config.layout)) * (config.dim / 16) ** 2

    def costs(self, models, **_):
        self.calls.append(("costs", len(models)))
        return [ChunkCost(ms=self.ms(m), gflops=m.dim / 1000) for m in models]

    def blocks(self, model):
        self.calls.append(("blocks", model.dim))
        options = [{"name": n, "latency_ms": ms, "memory_mb": 0.1, "peak_mb": 0.0} for n, ms in BLOCK_MS.items()]
        return {"options": options, "fixed": {"latency_ms": 0.0, "memory_mb": 0.0, "peak_mb": 0.0}}


NARROW = {"layout": ["ssa:1", "ssa:1", "ssa:1", "ssa:1"], "match": {"latency_of": "s2dit", "over": "dim"}}


def test_choose_is_the_closest_within_the_tolerance_and_the_smaller_on_a_tie():
    measured = {12: ChunkCost(7.0, 0), 16: ChunkCost(9.0, 0), 20: ChunkCost(10.4, 0), 24: ChunkCost(12.0, 0)}
    assert choose(10.0, measured, 0.05) == 20  # 0.4 above, within 5%
    assert choose(10.0, measured, 0.0) == 16  # never above
    assert choose(8.0, {1: ChunkCost(7.0, 0), 2: ChunkCost(9.0, 0)}, 0.2) == 1  # a tie
    with pytest.raises(ValueError, match=r"no candidate is within 5% of the reference's 5.00 ms "
                                         r"\(the cheapest timed, 12, takes 7.00 ms\)"):
        choose(5.0, measured, 0.05)


def test_a_matched_dim_is_chosen_from_the_measurements_and_recorded(cache, tmp_path):
    # s2dit: (2 + 5 x 2.6) = 15 ms; ssa:1 x 4 at dim d: 14 x (d/16)^2 ms
    calls: list = []
    grid = _grid(cache, tmp_path, {"s2dit": {}, "narrow": NARROW})
    variants = resolve_variants(grid, FakeMeasure(calls))
    # candidates: half to twice 16 in steps of 4 (an even head size of 2 heads), heads >= 6:
    # 12: 7.9, 16: 14.0, 20: 21.9 ... -> 16 (closest below 15 x 1.05)
    assert variants["narrow"] == {"layout": NARROW["layout"], "dim": 16} and variants["s2dit"] == {}
    # bisected: the reference beside 24 (31.5: slower), then 16 (faster), 20 (slower); then 16
    # and 20 timed again beside the reference
    assert calls == [("costs", 2), ("costs", 1), ("costs", 1), ("costs", 1 + 2)]
    record = json.loads((tmp_path / MATCHING).read_text())["variants"]["narrow"]
    assert [c["dim"] for c in record["candidates"]] == [16, 20]  # what the choice is made from
    assert [[c["dim"] for c in t["candidates"]] for t in record["timings"]] == [[24], [16], [20], [16, 20]]
    assert [t["passes"] for t in record["timings"]] == [1, 1, 1, 1]  # latency_repeats 1 in _grid
    assert [t["reference"] is not None for t in record["timings"]] == [True, False, False, True]
    assert record["reference"]["ms"] == pytest.approx(15.0) and record["choice"]["dim"] == 16
    assert record["choice"]["ms"] == pytest.approx(14.0) and record["limit_ms"] == pytest.approx(15.75)
    assert record["question"]["reference"]["layout"] == ["lcha", "ssa:2", "ssa:2", "lcha"]
    # the grid's cells train the chosen architecture
    kd, _ = resolved_grid(grid, FakeMeasure()).configs("narrow", 0)
    assert kd.model == {"dim": 16, "heads": 2, "layout": NARROW["layout"]}


def test_a_recorded_choice_is_reused_until_its_question_changes(cache, tmp_path):
    log: list[str] = []
    grid = _grid(cache, tmp_path, {"s2dit": {}, "narrow": NARROW}, log)
    first = resolve_variants(grid, FakeMeasure())

    class Slower(FakeMeasure):  # another machine, or another load: not measured again
        def costs(self, models, **_):
            raise AssertionError("a recorded choice was measured again")

    assert resolve_variants(grid, Slower()) == first
    assert any("as matching.json recorded it" in line for line in log)
    # a changed question (the tolerance, the candidates, the reference...) is measured again
    tight = {**NARROW, "match": {**NARROW["match"], "candidates": [20, 24], "tolerance": 0.5}}
    calls: list = []
    again = resolve_variants(_grid(cache, tmp_path, {"s2dit": {}, "narrow": tight}), FakeMeasure(calls))
    assert again["narrow"]["dim"] == 20 and calls == [("costs", 3)]  # 21.9 <= 15 x 1.5


def test_a_matched_depth_repeats_the_layouts_block(cache, tmp_path):
    variants = {"s2dit": {}, "deep": {"layout": ["ssa:1"], "match": {"latency_of": "s2dit", "over": "blocks"}}}
    # ssa:1 x n: 2 + 3 n ms, n in 1..2 by default (twice the layout's 1 block)
    out = resolve_variants(_grid(cache, tmp_path, variants), FakeMeasure())
    assert out["deep"] == {"layout": ["ssa:1", "ssa:1"]}
    variants["deep"]["match"]["candidates"] = [2, 3, 4, 5]  # 8, 11, 14, 17 ms
    out = resolve_variants(_grid(cache, tmp_path, variants), FakeMeasure())
    assert out["deep"] == {"layout": ["ssa:1"] * 4}


def test_a_searched_layout_is_the_dps_best_under_the_references_latency(cache, tmp_path):
    calls: list = []
    variants = {"s2dit": {}, "searched": {"search": {"latency_of": "s2dit", "max_blocks": 5, "min_blocks": 3},
                                          "train_ar": {"critic_steps": 2}}}
    out = resolve_variants(_grid(cache, tmp_path, variants), FakeMeasure(calls))
    # per chunk: lcha 5, ssa:1 3, ssa:2 1.5, ssa:4 1 ms; s2dit measures 15, its blocks 13 -> the
    # rest 2; two LCHA slices leave 3 ms of filling: ssa:4 x 3 (quality 2.4) beats ssa:2 x 2 (1.9)
    assert out["searched"] == {"train_ar": {"critic_steps": 2},
                               "layout": ["lcha", "ssa:4", "ssa:4", "ssa:4", "lcha"]}
    assert calls == [("blocks", 16), ("costs", 1), ("costs", 2)]  # LUT, budget, the check
    record = json.loads((tmp_path / MATCHING).read_text())["variants"]["searched"]
    assert record["budget_ms"] == pytest.approx(15.0) and record["fixed_ms"] == pytest.approx(FIXED_MS)
    assert record["forwards_per_chunk"] == FORWARDS
    assert record["result"]["predicted_latency_ms"] == pytest.approx(15.0)
    assert record["check"]["found"]["ms"] == pytest.approx(15.0)  # 2 + 5 x (2 + 0.6)
    with pytest.raises(ValueError, match=r"\[compare.variants\] searched: no layout of 3-5 blocks fits"):
        variants["searched"]["search"]["scores"] = {"lcha": 1.0}  # a new question: searched again
        resolve_variants(_grid(cache, tmp_path, {**variants, "s2dit": {"layout": ["ssa:4"]}}), FakeMeasure())


class Table:
    """``bisect_choice``'s timer on a table of latencies: {value: ms} (a list of tables: the
    n-th timing of a value reads the n-th, the last one after), the reference at REF_MS."""

    REF_MS = 10.0

    def __init__(self, *tables: dict[int, float]):
        self.tables, self.timings, self.seen = tables, [], {}

    def __call__(self, values, what, with_reference, full):
        self.timings.append((list(values), with_reference, full))
        readings = {}
        for v in values:
            n = self.seen[v] = self.seen.get(v, -1) + 1
            readings[v] = ChunkCost(self.tables[min(n, len(self.tables) - 1)][v], 0.0)
        return (ChunkCost(self.REF_MS, 0.0) if with_reference else None), readings


def _exhaustive(table: dict[int, float], tolerance: float) -> int | str:
    try:
        return choose(Table.REF_MS, {v: ChunkCost(ms, 0.0) for v, ms in table.items()}, tolerance)
    except ValueError as exc:
        return str(exc)


def _bisected(table: dict[int, float], tolerance: float) -> tuple[int | str, Table]:
    timer = Table(table)
    try:
        return bisect_choice(list(table), tolerance, timer)[0], timer
    except ValueError as exc:
        return str(exc), timer


def test_bisection_chooses_as_timing_every_candidate_would_on_increasing_latencies():
    rng = random.Random(0)
    for case in range(300):
        n = rng.randint(1, 12)
        values = sorted(rng.sample(range(8, 200, 4), n))
        # increasing latency around the reference's 10 ms, by quarters (the limit hit exactly)
        ms = sorted(rng.sample([q / 4 for q in range(12, 80)], n))
        table = dict(zip(values, ms, strict=True))
        tolerance = rng.choice((0.0, 0.05, 0.2))
        choice, timer = _bisected(table, tolerance)
        assert choice == _exhaustive(table, tolerance), (case, table, tolerance)
        timed = sum(len(v) for v, _, _ in timer.timings)
        probes = sum(not full for _, _, full in timer.timings)
        assert probes <= math.ceil(math.log2(n + 1)) and timed - probes <= (n if n <= 3 else 2)
        assert sum(full for _, _, full in timer.timings) == 1  # exact timings confirm the bracket
        assert timer.timings[0][1]  # the reference is timed first

def test_nine_widths_take_a_few_timings():
    table = {dim: 50.0 * (dim / 96) ** 1.5 / 5 for dim in range(64, 129, 8)}  # 64..128, ref 10 ms
    choice, timer = _bisected(table, 0.05)
    assert choice == _exhaustive(table, 0.05) == 96
    # 4 probes of one pass (the first beside the reference), then 96 and 104 beside it: 14
    # passes of one model instead of 30 (the reference and 9 widths, 3 passes each)
    assert timer.timings == [([96], True, False), ([120], False, False), ([112], False, False),
                             ([104], False, False), ([96, 104], True, True)]


def test_bisection_is_sane_on_noisy_and_non_monotone_latencies():
    true = {8: 6.0, 12: 8.0, 16: 9.8, 20: 11.5, 24: 14.0, 28: 17.0, 32: 20.0}
    # the first timing of 16 and 20 read 30% high (a burst of load): the probes stop at 12,
    # the pair's timings find 16 faster than the reference after all and move the pair up
    noisy = {v: ms * (1.3 if v in (16, 20) else 1.0) for v, ms in true.items()}
    timer = Table(noisy, true)
    choice, ref, readings = bisect_choice(list(true), 0.05, timer)
    assert choice == 16 == _exhaustive(true, 0.05) and set(readings) == {16, 20}
    assert [v for v, _, full in timer.timings if full] == [[12, 16], [16, 20]]
    # not monotone: whatever is chosen is within the limit by the readings it was chosen from,
    # after a bounded number of timings
    bumpy = {8: 6.0, 12: 12.0, 16: 9.0, 20: 10.2, 24: 9.9, 28: 30.0, 32: 11.0}
    timer = Table(bumpy)
    choice, ref, readings = bisect_choice(list(bumpy), 0.05, timer)
    assert readings[choice].ms <= ref.ms * 1.05 and choice in bumpy
    assert sum(full for _, _, full in timer.timings) <= GUARD_ROUNDS
    # a reading that flips between timings does not move the bracket back and forth forever
    flip = [{**true, 16: 12.0, 20: 9.0}, {**true, 16: 9.0, 20: 12.0}] * 5
    timer = Table(*flip)
    choice, ref, readings = bisect_choice(list(true), 0.05, timer)
    assert readings[choice].ms <= ref.ms * 1.05 and sum(full for _, _, full in timer.timings) <= GUARD_ROUNDS


@pytest.mark.parametrize(("variants", "error"), [
    ({"a": {"match": {"latency_of": "nope"}}},
     r"\[compare.variants.a.match\] latency_of 'nope' is not another variant of the grid; variants: b"),
    ({"a": {"match": {"latency_of": "a"}}}, r"latency_of 'a' is not another variant"),
    ({"a": {"match": {"latency_of": "b", "over": "heads"}}}, r"\[compare.variants.a.match\] over"),
    ({"a": {"match": {"latency_of": "b", "tolerence": 0.1}}}, r"key 'tolerence' \(did you mean 'tolerance'\?\)"),
    ({"a": {"match": {"over": "dim"}}}, r"\[compare.variants.a.match\] needs 'latency_of'"),
    ({"a": {"match": {"latency_of": "b"}, "dim": 64}}, r"\[compare.variants.a\] sets 'dim' and match finds it"),
    ({"a": {"match": {"latency_of": "b", "over": "blocks"}, "layout": ["lcha", "conv"]}},
     r"over = 'blocks' repeats one block kind"),
    ({"a": {"match": {"latency_of": "b"}, "search": {"latency_of": "b", "max_blocks": 4}}},
     r"has both 'match' and 'search'"),
    ({"a": {"search": {"latency_of": "b"}}}, r"\[compare.variants.a.search\] needs 'max_blocks'"),
    ({"a": {"search": {"latency_of": "b", "max_blocks": 4}, "layout": ["lcha"]}}, r"sets 'layout' and search"),
    ({"a": {"search": {"latency_of": "b", "max_blocks": 3, "min_blocks": 4}}}, r"min_blocks 4 > max_blocks 3"),
    ({"a": {"search": {"latency_of": "b", "max_blocks": 0}}}, r"\[compare.variants.a.search\] max_blocks"),
    ({"a": {"match": {"latency_of": "b"}}, "c": {"search": {"latency_of": "a", "max_blocks": 4}}},
     r"latency_of 'a' is itself matched or searched"),
])
def test_a_bad_match_or_search_table_is_refused_naming_the_variant_and_key(variants, error):
    with pytest.raises(ConfigError, match=error):
        CompareConfig(variants={**variants, "b": {}})


def test_a_candidate_that_does_not_build_is_refused_naming_the_variant(cache, tmp_path):
    bad = {**NARROW, "match": {**NARROW["match"], "candidates": [16, 18]}}  # 18: heads of 9
    with pytest.raises(ValueError, match=r"\[compare.variants\] narrow \(dim 18\): dim must split"):
        resolve_variants(_grid(cache, tmp_path, {"s2dit": {}, "narrow": bad}), FakeMeasure())
    mixed = {"s2dit": {}, "deep": {"match": {"latency_of": "s2dit", "over": "blocks"}}}  # the base's layout
    with pytest.raises(ValueError, match=r"deep: match over = 'blocks' repeats one block kind"):
        resolve_variants(_grid(cache, tmp_path, mixed), FakeMeasure())


def test_compare_toml_finds_its_equal_cost_variants():
    from pipeline.graph.stages.compare import compare_config

    grid = compare_config(load_run_config(str(ROOT / "configs" / "compare.toml")))
    assert grid.variants["full_attention_narrow"]["match"]["latency_of"] == "s2dit"
    assert "dim" not in grid.variants["full_attention_narrow"]
    assert grid.variants["s2dit_searched"]["search"]["latency_of"] == "s2dit"


def test_the_real_measurement_on_a_tiny_model(cache, tmp_path):
    variants = {"s2dit": {}, "narrow": {**NARROW, "match": {**NARROW["match"], "candidates": [12, 16]}},
                "searched": {"search": {"latency_of": "s2dit", "max_blocks": 4}}}
    log: list[str] = []
    # guided, as [compare] guidance = 2 measures every cell
    out = resolve_variants(_grid(cache, tmp_path, variants, log, guidance=2.0, cond_dropout=0.1), measure=None)
    record = json.loads((tmp_path / MATCHING).read_text())["variants"]
    narrow, searched = record["narrow"], record["searched"]
    assert out["narrow"]["dim"] in (12, 16) and narrow["choice"]["dim"] == out["narrow"]["dim"]
    assert [c["dim"] for c in narrow["candidates"]] == [12, 16]
    assert all(c["ms"] > 0 and c["gflops"] > 0 for c in [*narrow["candidates"], narrow["reference"]])
    assert narrow["setup"]["torch_threads"] == 1 and narrow["setup"]["length"] == 1
    assert narrow["setup"]["guidance"] == narrow["question"]["guidance"] == 2.0
    assert len(out["searched"]["layout"]) == 4 and searched["result"]["layout"] == out["searched"]["layout"]
    assert {o["name"] for o in searched["lut"]["options"]} == {"lcha", "ssa:1", "ssa:2", "ssa:4"}
    assert searched["check"]["found"]["ms"] > 0 and searched["forwards_per_chunk"] == FORWARDS
    assert any(line.startswith("searched: layout ") for line in log)


def test_timings_that_disagree_between_checks_say_so():
    """The load changes between the pair's checks: 16 reads below the reference in the first
    and everything reads 50% high in the second (a case seen on a loaded machine): the error
    names the disagreement and what to do, not only "add smaller candidates"."""
    true = {8: 6.0, 12: 8.0, 16: 9.8, 20: 11.5, 24: 14.0, 28: 17.0, 32: 20.0}
    # the probes stop at 16; the first check reads 20 below the reference too (move up), the
    # second check reads 20 high and 24 (its first timing) above: neither fits
    first = {**true, 16: 9.9, 20: 9.8}
    burst = {v: ms * 1.5 for v, ms in true.items()}
    with pytest.raises(ValueError, match=r"cheapest timed, 24.*earlier check read 16 at 0\.99x, 20 at "
                                         r"0\.98x.*load changed while timing.*latency_repeats"):
        bisect_choice(list(true), 0.05, Table(true, first, burst))
