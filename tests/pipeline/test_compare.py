"""Students side by side (pipeline/compare, the run graph's compare stage): the aggregation over
seeds and the Pareto front on hand-made numbers; [compare] refusals by name; the grid on a tiny
analytic cache trains every (variant, seed), writes results.json and the page, reruns without
retraining, resumes an interrupted training, retrains a cell whose recipe changed or whose
checkpoint was removed, refuses a variant that does not fit the cache first; the stage in a
real `s2dit run` (up to date on a rerun, a new seed trains only its cells); configs/compare.toml
is configs/memory.toml's run plus [compare]. The page in Chromium: test_compare_browser.py."""

from __future__ import annotations

import dataclasses
import html
import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from scipy import stats
from test_report import build_partial_run

from cache_schema.typed_config import ConfigError
from pipeline.compare import (
    CompareConfig,
    Grid,
    pareto_front,
    run_grid,
    seed_difference,
    seed_mean,
    seed_summary,
)
from pipeline.compare.cells import _next_ready
from pipeline.compare.grid import CELL, EVAL, Training, check_variants, prepare_cell, twin_variants
from pipeline.compare.page import write_page
from pipeline.compare.rows import teacher_scores
from pipeline.compare.sharing import stage_owners, waits_for
from pipeline.compare.stats import paired_difference
from pipeline.compare.summary import shares_a_stage, summarise_grid, versus_sentences
from pipeline.graph import RunConfigError, load_run_config
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig
from student_train.stages import get_stage

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]


# -- over seeds, and the front -------------------------------------------------------------------

def test_seed_mean_is_the_mean_with_the_95_percent_t_half_width():
    m = seed_mean([1.0, 2.0, 3.0])  # sd 1, n 3: t(0.975, 2) = 4.3027
    assert m.mean == 2.0 and m.n == 3 and m.half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert m.text() == "2.000 \u00b1 2.484"
    two = seed_mean([0.5, 0.7])  # sd 0.1414, t(0.975, 1) = 12.706
    assert two.half == pytest.approx(12.706205 * math.sqrt(0.02) / math.sqrt(2), rel=1e-6)
    one = seed_mean([0.25])
    assert one.half is None and one.text() == "0.250 (1 seed)"
    assert seed_mean([0.4] * 5).half == 0.0
    with pytest.raises(ValueError, match="finite"):
        seed_mean([0.1, float("nan")])


# rates as the oracle reports them (k of n samples): no near-ties that cost scipy its precision
seed_values = st.lists(st.integers(0, 576).map(lambda k: k / 576), min_size=2, max_size=6)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy, on a student with no spread
@settings(max_examples=300, deadline=None, derandomize=True)
@given(seed_values, seed_values)
def test_a_difference_over_seeds_is_welchs_test_as_scipy_computes_it(a, b):
    d = seed_difference(a, b)
    assert d.diff == pytest.approx(sum(a) / len(a) - sum(b) / len(b), abs=1e-12)
    assert (d.n_a, d.n_b) == (len(a), len(b))
    if len(set(a)) == 1 and len(set(b)) == 1:  # no spread at all: scipy's t is undefined
        assert d.half == 0.0
        return
    test = stats.ttest_ind(a, b, equal_var=False)
    low, high = test.confidence_interval(0.95)
    assert d.diff - d.half == pytest.approx(low, abs=1e-9) and d.diff + d.half == pytest.approx(high, abs=1e-9)
    # the interval excludes 0 exactly when Welch's test rejects equal means at 5%
    if abs(test.pvalue - 0.05) > 1e-6:
        assert (d.verdict != "not separated") == (test.pvalue < 0.05)
        assert d.verdict in ("not separated", "ahead" if d.diff > 0 else "behind")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(2, 6).flatmap(lambda n: st.tuples(*[st.tuples(st.integers(0, 576), st.integers(0, 576))] * n)))
def test_a_paired_difference_is_the_paired_t_test_as_scipy_computes_it(pairs):
    a, b = [x / 576 for x, _ in pairs], [y / 576 for _, y in pairs]
    d = paired_difference(a, b)
    assert d.paired and (d.n_a, d.n_b) == (len(a), len(a)) and d.to_json()["paired"]
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    assert d.diff == pytest.approx(sum(diffs) / len(diffs), abs=1e-12)
    if max(diffs) - min(diffs) < 1e-9:  # no spread: scipy's t is undefined
        assert d.half == pytest.approx(0.0, abs=1e-9)
        return
    low, high = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert d.diff - d.half == pytest.approx(low, abs=1e-9) and d.diff + d.half == pytest.approx(high, abs=1e-9)
    with pytest.raises(ValueError, match="one value of each per seed"):
        paired_difference(a, b[:-1])


def test_a_difference_with_one_seed_has_no_interval_and_says_so():
    d = seed_difference([0.9], [0.6, 0.7])
    assert d.half is None and d.verdict == "one seed" and d.text() == "+0.250 (1 seed)"
    # se 0.05 / sqrt(3) each, Welch df 4: t(0.975, 4) = 2.776, half = 2.776 * sqrt(2) * 0.0289
    assert seed_difference([0.9, 0.8, 0.85], [0.6, 0.7, 0.65]).text() == "+0.200 [+0.087, +0.313]"


def test_pareto_front_keeps_what_nothing_beats_on_both_cost_and_quality():
    points = {"cheap_bad": (1.0, 0.2), "mid": (2.0, 0.8), "dominated": (2.5, 0.7),
              "same_cost_worse": (2.0, 0.6), "dear_best": (4.0, 0.95), "dear_tie": (5.0, 0.95)}
    assert pareto_front(points) == ["cheap_bad", "mid", "dear_best"]
    assert pareto_front({"a": (1.0, 0.5), "b": (1.0, 0.5)}) == ["a", "b"]  # equal: both stay


def _row(role: str, recall: float) -> dict:
    return {"role": role, "recall": recall, "recall_ci": [recall - 0.01, 1.0], "adherence": 1.0,
            "per_chunk": [1.0], "gate": {"passed": True, "failed": []}}


def test_the_teacher_rows_are_kept_by_role_and_by_the_length_their_key_names():
    report = {"lengths": [1, 4], "held_out_seeds": {
        "teacher_fullstep": _row("reference", 1.0), "teacher_4step": _row("baseline", 0.98),
        "teacher_4step_unipc": _row("baseline", 0.99), "teacher_fullstep_4x": _row("reference", 0.97),
        "student_ar_4step_streaming": _row("student", 0.9), "student_ar_4step_streaming_4x": _row("student", 0.8),
        "student_ar_4step_streaming_forced3": _row("diagnostic", 0.95)},
        "unseen_combinations": {"teacher_fullstep": _row("reference", 1.0)}}
    out = teacher_scores(report)
    assert {m: set(rows) for m, rows in out["held_out_seeds"].items()} == {
        "1x": {"teacher_fullstep", "teacher_4step", "teacher_4step_unipc"}, "4x": {"teacher_fullstep"}}
    assert out["held_out_seeds"]["4x"]["teacher_fullstep"]["recall"] == 0.97
    assert out["held_out_seeds"]["1x"]["teacher_4step_unipc"] == {
        "recall": 0.99, "recall_ci": [0.98, 1.0], "adherence": 1.0, "role": "baseline",
        "gate": {"passed": True, "failed": []}}  # the comparison's figures only
    assert set(out["unseen_combinations"]["1x"]) == {"teacher_fullstep"}


def test_seed_summary_counts_gate_passes_and_averages_the_metrics_every_seed_has():
    scores = [{"adherence": 0.9, "recall": 0.8, "gate": {"passed": True}},
              {"adherence": 0.7, "gate": {"passed": False}},
              {"adherence": 0.8, "recall": 0.6, "gate": {"passed": True}}]
    out = seed_summary(scores, ("adherence", "recall"))
    assert out["n"] == 3 and out["gate_passes"] == 2 and set(out["metrics"]) == {"adherence"}
    assert out["metrics"]["adherence"].mean == pytest.approx(0.8)


def _scores(recall: float, jitter: float) -> dict:
    return {"adherence": 0.9 + jitter, "recall": recall + jitter, "mode_tv": 0.05, "amplitude_bias": -0.1,
            "ghost_energy": 0.002, "gate": {"passed": recall > 0.5, "failed": [] if recall > 0.5 else ["recall"]}}


def fake_results(variants: dict[str, tuple[float, float]], seeds=(0, 1, 2), lengths=(1, 4)) -> dict:
    """results.json of a grid that never trained: per variant (ms per chunk, recall) at the
    longest lengths (0.99 at 1x), seeds spread by +-0.01 around them."""
    cells = []
    for v, (ms, recall) in variants.items():
        for i, seed in enumerate(seeds):
            jitter = (i - 1) * 0.01
            cost = {f"{m}x": {"last5_s": ms / 1e3 * (1 + jitter), "mean_s": ms / 1e3, "first5_s": ms / 1e3,
                              "flat_ratio": 1.0, "gflops": 0.01 * ms, "chunks": 15 * m, "passes": 3}
                    for m in lengths}
            cells.append({"variant": v, "seed": seed, "folder": f"{v}/seed{seed}", "resumed": v == "b",
                          "train_seconds": {"kd": 60.0, "ar": 30.0, "total": 90.0 + seed},
                          "scores": {"held_out_seeds": {f"{m}x": _scores(recall if m > 1 else 0.99, jitter)
                                                        for m in lengths}},
                          "cost": cost, "samples": [f"{v}/seed{seed}/samples/sample.0.mp4"] if seed == 0 else []})
    results = {"version": 1, "written": "now", "cache": "memory://c@train", "generation": 1,
               "seeds": list(seeds), "lengths": list(lengths), "per_class": 96, "noise": "report",
               "variants": {v: {"overrides": {"dim": 64}, "train_model": {"layout": ["lcha"], "dim": 64},
                                "model": None} for v in variants},
               "cost_setup": {"latency_batch": 16, "latency_repeats": 3, "torch_threads": 1},
               "cells": cells,
               "teacher": {"held_out_seeds": {"1x": {
                   "teacher_fullstep": {**_scores(1.0, 0.0), "role": "reference"},
                   "teacher_4step_unipc": {**_scores(0.98, 0.0), "recall_ci": [0.97, 0.99], "role": "baseline"}}}}}
    results.update(summarise_grid(results))
    return results


def test_the_summary_is_over_seeds_and_the_pareto_plot_has_one_point_per_variant(tmp_path):
    results = fake_results({"s2dit": (5.0, 0.9), "full": (9.0, 0.95), "narrow": (6.0, 0.7), "conv": (2.0, 0.3)})
    s = results["summary"]["s2dit"]
    assert s["seeds"] == [0, 1, 2] and s["train_s"]["mean"] == 91.0
    recall = s["sets"]["held_out_seeds"]["4x"]["metrics"]["recall"]
    assert recall["mean"] == pytest.approx(0.9) and recall["half"] == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-5)
    assert results["pareto"]["y"] == "recall" and results["pareto"]["length"] == "4x"
    assert results["pareto"]["front"] == ["conv", "s2dit", "full"]  # narrow: dearer and worse than s2dit

    class Marks(HTMLParser):
        def __init__(self):
            super().__init__()
            self.points, self.links = [], []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if "data-point" in attrs:
                self.points.append((attrs["data-point"], "marked" in attrs.get("class", "")))
            if tag == "a":
                self.links.append(attrs["href"])

    page = Marks()
    page.feed(Path(write_page(results, str(tmp_path / "index.html"))).read_text())
    assert sorted(page.points) == [("conv", True), ("full", True), ("narrow", False), ("s2dit", True)]
    assert "s2dit/seed0/samples/sample.0.mp4" in page.links and "results.json" in page.links


def test_the_reference_against_each_variant_is_a_welch_difference_and_a_plain_sentence(tmp_path):
    results = fake_results({"s2dit": (5.0, 0.9), "full": (5.1, 0.6), "narrow": (4.0, 0.895), "conv": (2.0, 0.95)})
    results["variants"]["twin"] = {**results["variants"]["s2dit"], "same_as": "s2dit"}
    results["cells"] += [{**c, "variant": "twin", "same_as": "s2dit"} for c in results["cells"] if c["variant"] == "s2dit"]
    results.update(summarise_grid(results))
    v = results["versus"]
    assert v["reference"] == "s2dit" and set(v["variants"]) == {"full", "narrow", "conv"}  # the twin is s2dit
    full = v["variants"]["full"]["4x"]
    assert full["recall"]["diff"] == pytest.approx(0.3) and full["recall"]["verdict"] == "ahead"
    assert full["cost_ratio"] == pytest.approx(5.1 / 5.0)
    assert v["variants"]["narrow"]["4x"]["recall"]["verdict"] == "not separated"
    assert v["variants"]["conv"]["4x"]["recall"]["verdict"] == "behind"
    assert v["variants"]["full"]["1x"]["recall"]["verdict"] == "not separated"  # 0.99 each at 1x
    text = Path(write_page(results, str(tmp_path / "index.html"))).read_text()
    assert ("s2dit against full at 4x: recall 0.900 against 0.600, ahead by 0.300 (95% Welch interval "
            "+0.277 to +0.323, 3 and 3 seeds), full at 1.02x s2dit&#x27;s per-chunk latency.") in text
    assert "s2dit against conv at 4x: recall 0.900 against 0.950, behind by 0.050" in text
    assert "against narrow at 4x: recall 0.900 against 0.895, not separated: +0.005 (95% Welch" in text
    assert 'id="compare-versus"' in text and "against twin" not in text
    # what `s2dit run` prints after the grid: the same sentences
    assert [line.split(":")[0] for line in versus_sentences(results)] == [
        "s2dit against full at 4x", "s2dit against narrow at 4x", "s2dit against conv at 4x"]



def test_every_other_scored_set_has_its_own_versus_and_sentences(tmp_path):
    """A grid scored on the unseen combinations too (configs/unseen_report.toml) compares the
    reference with each variant there as well: where an unseen-combinations recipe is judged."""
    results = fake_results({"dropout": (5.0, 0.9), "none": (5.0, 0.9)})
    unseen = {"dropout": 0.85, "none": 0.70}
    for c in results["cells"]:
        jitter = (c["seed"] - 1) * 0.01
        row = {k: v for k, v in _scores(0.9, jitter).items() if k != "recall"}  # a task without recall
        made = "a red ring moving left" if c["seed"] < 2 else "a red cross moving left"
        errors = [{"class": "a red square moving left", "samples": 96, "adherence": unseen[c["variant"]] + jitter,
                   "wrong": {"object": 0.1 * (c["seed"] + 1), "colour": 0.0, "motion": 0.0},
                   "neighbour": made, "neighbour_share": 0.05, "pinned_by": ["a red ring moving left"]}]
        c["scores"]["unseen_combinations"] = {m: {**row, "adherence": unseen[c["variant"]] + jitter,
                                                  "errors": errors} for m in ("1x", "4x")}
    results.update(summarise_grid(results))
    # the named errors over seeds: mean wrong shares, the neighbour made most often
    (named,) = results["summary"]["none"]["sets"]["unseen_combinations"]["1x"]["classes"]
    assert named["class"] == "a red square moving left" and named["wrong"]["object"] == pytest.approx(0.2)
    assert (named["neighbour"], named["neighbour_share"]) == ("a red ring moving left", pytest.approx(0.1 / 3))
    assert named["adherence"]["mean"] == pytest.approx(0.70)
    assert named["pinned_by"] == ["a red ring moving left"]  # the split's, carried to the page
    assert "classes" not in results["summary"]["none"]["sets"]["held_out_seeds"]["1x"]
    assert results["versus"]["set"] == "held_out_seeds" and list(results["versus_sets"]) == ["unseen_combinations"]
    row = results["versus_sets"]["unseen_combinations"]["variants"]["none"]["4x"]
    assert set(row) == {"adherence", "cost_ratio"} and row["adherence"]["verdict"] == "ahead"
    assert row["adherence"]["diff"] == pytest.approx(0.15)
    [sentence] = versus_sentences(results, "unseen_combinations")
    assert sentence.startswith("dropout against none at 4x on unseen_combinations: adherence 0.850 against "
                               "0.700, ahead by 0.150 (95% Welch interval")
    text = html.unescape(Path(write_page(results, str(tmp_path / "index.html"))).read_text())
    assert 'id="compare-versus"' in text and 'id="compare-versus-unseen-combinations"' in text
    assert "dropout against each variant on unseen_combinations" in text
    assert 'id="compare-classes-unseen-combinations"' in text and "a red ring moving left (0.03)" in text
    assert "<th>pinned in training by</th>" in text and "<td>a red ring moving left</td>" in text
    assert "dropout against none at 4x: recall 0.900 against 0.900, not separated" in text  # held-out seeds
    assert versus_sentences(results, "unseen_validation") == []  # not scored

# -- [compare] refusals -------------------------------------------------------------------------

def test_a_variant_sharing_the_references_kd_on_every_seed_is_compared_seed_by_seed(tmp_path):
    """The same KD model per seed: a small steady difference is separated by the paired interval
    where Welch's, over seeds that spread widely, is not."""
    results = fake_results({"s2dit": (5.0, 0.8), "ablation": (5.0, 0.8), "other": (5.0, 0.8)})
    spread = {0: 0.6, 1: 0.8, 2: 0.95}  # the KD model of each seed sets most of its recall
    for c in results["cells"]:
        row = c["scores"]["held_out_seeds"]["4x"]
        row["recall"] = spread[c["seed"]] - (0.02 + 0.005 * c["seed"] if c["variant"] != "s2dit" else 0.0)
        if c["variant"] == "ablation":
            c["shared"] = {"kd": f"s2dit/seed{c['seed']}"}
    results.update(summarise_grid(results))
    assert shares_a_stage(results, "s2dit", "ablation") and not shares_a_stage(results, "s2dit", "other")
    paired, welch = (results["versus"]["variants"][v]["4x"]["recall"] for v in ("ablation", "other"))
    assert paired["diff"] == pytest.approx(welch["diff"]) == pytest.approx(0.025)
    assert (paired["paired"], paired["verdict"]) == (True, "ahead")
    assert (welch["paired"], welch["verdict"]) == (False, "not separated")
    low, high = stats.ttest_rel([0.6, 0.8, 0.95], [0.58, 0.775, 0.92]).confidence_interval(0.95)
    assert paired["diff"] - paired["half"] == pytest.approx(low) and paired["diff"] + paired["half"] == pytest.approx(high)
    text = html.unescape(Path(write_page(results, str(tmp_path / "index.html"))).read_text())
    assert "ahead by 0.025 (95% paired interval" in text and "3 seeds paired by their shared stage" in text
    assert "ahead (paired)" in text
    # one seed whose cells do not share: no pairing (Welch over the seeds)
    results["cells"][[c["variant"] for c in results["cells"]].index("ablation")]["shared"] = {}
    assert not shares_a_stage(results, "s2dit", "ablation")


def test_an_unknown_variant_key_is_refused_naming_the_variant_and_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"compare\.variants\.full_attention\] key 'layuot' "
                                         r"\(did you mean 'layout'\?\)"):
        CompareConfig(variants={"s2dit": {}, "full_attention": {"layuot": ["ssa:1"]}})
    with pytest.raises(ConfigError, match="needs variants"):
        CompareConfig(variants={})
    with pytest.raises(ConfigError, match="folder"):
        CompareConfig(variants={"../up": {}})
    config = tmp_path / "run.toml"
    config.write_text("[corpus]\nkind = 'analytic'\n[compare]\nseeds = [0]\n"
                      "[compare.variants]\ns2dit = {}\nwide = {dimm = 128}\n")
    with pytest.raises(RunConfigError, match=r"\[compare\].*compare\.variants\.wide\] key 'dimm' "
                                             r"\(did you mean 'dim'\?\)"):
        from pipeline.graph import STAGES
        from pipeline.graph.runner import check_config
        check_config(load_run_config(str(config)), STAGES)
    config.write_text("[corpus]\nkind = 'analytic'\n[compare]\nseed = [0]\n[compare.variants]\ns2dit = {}\n")
    with pytest.raises(RunConfigError, match="unknown \\[compare\\] key 'seed' \\(did you mean 'seeds'\\?\\)"):
        load_run_config(str(config), overrides=["compare.per_class=2"])


def test_compare_toml_is_the_memory_run_plus_its_grid():
    compare, memory = (load_run_config(str(ROOT / "configs" / n)) for n in ("compare.toml", "memory.toml"))
    for name in compare.sections:
        if name not in ("run", "compare"):
            assert compare.section(name) == memory.section(name), name  # --out runs/memory reuses it
    from pipeline.graph.stages.compare import compare_config

    grid = compare_config(compare)
    assert grid is not None and len(grid.seeds) >= 3 and grid.lengths == (1, 4) and grid.per_class >= 96
    assert {"s2dit", "full_attention", "full_attention_window", "full_attention_narrow", "lcha_only",
            "conv_only"} <= set(grid.variants)
    assert grid.variants["full_attention_window"]["ssa_sink"] is True
    assert compare_config(memory) is None  # no [compare]: the stage is skipped
    # the stage-2 ablations and reference points, each a [train_ar] override of the run's recipe
    from pipeline.graph import STAGES
    from pipeline.graph.stages.training import training_config, training_stages

    trainings = tuple(Training(get_stage(s.trains), training_config(s, compare))
                      for s in training_stages(STAGES))
    cells = Grid(compare=grid, trainings=trainings, cache_url="unused", generation=1, out="unused")
    run_ar = trainings[-1].config
    assert (run_ar.causal_steps, run_ar.regression_weight, run_ar.critic_steps) == (400, 0.0, 1)
    ar = {name: cells.configs(name, 0)[-1] for name in grid.variants}  # every variant's recipe builds
    assert ar["no_causal_phase"] == dataclasses.replace(run_ar, seed=0, causal_steps=0)
    assert run_ar.use_causal_pairs and ar["no_causal_pairs"] == dataclasses.replace(run_ar, seed=0, use_causal_pairs=False)
    assert [ar[f"regression_{w}"].regression_weight for w in ("1", "0_25")] == [1.0, 0.25]
    assert ar["critic_5"].critic_steps == 5 and ar["s2dit"] == dataclasses.replace(run_ar, seed=0)
    assert ar["self_forcing"] == dataclasses.replace(run_ar, seed=0, causal_steps=0, critic_steps=5)
    latent_frames = compare.section("train")["model"]["latent_frames"]
    assert (ar["bidirectional_dmd"].chunk_frames, ar["bidirectional_dmd"].causal_steps) == (latent_frames, 0)
    assert all(cells.configs(name, 0)[0] == cells.configs("s2dit", 0)[0]  # the same KD
               for name in ("no_causal_phase", "no_causal_pairs", "regression_1", "critic_5", "self_forcing",
                            "bidirectional_dmd"))
    # ... so the grid trains it once per seed (pipeline/compare/sharing.py)
    assert all(stage_owners(cells, name, 0) == {"kd": "s2dit"} for name in ("no_causal_pairs", "bidirectional_dmd"))


def test_unseen_report_toml_is_the_tuning_run_on_reported_seeds():
    """The unseen report trains configs/unseen.toml's recipe (and the same without dropout) on the
    reported seeds and scores it where the tuning run may never look: the reporting noise and the
    report subset."""
    report, tuning = (load_run_config(str(ROOT / "configs" / n)) for n in ("unseen_report.toml", "unseen.toml"))
    for name in report.sections:
        if name not in ("run", "eval", "compare"):  # each section's seed is its run's
            assert {**report.section(name), "seed": None} == {**tuning.section(name), "seed": None}, name
    assert tuning.section("run")["seed"] not in range(5) and report.section("run")["seed"] in range(5)
    from pipeline.graph import STAGES
    from pipeline.graph.stages.compare import compare_config
    from pipeline.graph.stages.training import training_config, training_stages

    grid = compare_config(report)
    assert grid.seeds == (0, 1, 2, 3, 4) and grid.per_class >= 96
    assert (grid.noise, grid.unseen) == ("report", "report")
    assert (tuning.section("eval")["noise"], tuning.section("eval")["unseen"]) == ("tune", "validation")
    trainings = tuple(Training(get_stage(s.trains), training_config(s, report))
                      for s in training_stages(STAGES))
    cells = Grid(compare=grid, trainings=trainings, cache_url="unused", generation=1, out="unused")
    dropout = [c.cond_dropout for c in cells.configs("dropout_0_1", 0)]
    assert dropout == [0.1, 0.1] and [c.cond_dropout for c in cells.configs("no_dropout", 0)] == [0.0, 0.0]
    assert cells.configs("no_dropout", 0)[0] == dataclasses.replace(cells.configs("dropout_0_1", 0)[0], cond_dropout=0.0)
    assert grid.seeds_of("dropout_0_1") == (0, 1, 2, 3, 4) and len(grid.seeds_of("no_dropout")) >= 3


def test_unseen_varied_toml_is_the_unseen_report_on_the_split_without_a_shortcut():
    varied, report = (load_run_config(str(ROOT / "configs" / n))
                      for n in ("unseen_varied.toml", "unseen_report.toml"))
    assert varied.sections.keys() == report.sections.keys()
    for name in report.sections.keys() - {"run", "corpus"}:
        assert varied.section(name) == report.section(name), name
    assert varied.section("corpus") == {**report.section("corpus"), "split": "pairs_varied"}
    assert varied.section("run")["seed"] == report.section("run")["seed"]
    assert varied.section("run")["out"] != report.section("run")["out"]


def test_unseen_tune_toml_chooses_on_tuning_seeds_where_recipes_are_chosen():
    """The tuning grid for the unseen collapse is configs/unseen.toml's run (its tuning cache)
    with candidate recipes on tuning training seeds, scored on the tune noise and the validation
    subset: never a reported seed, noise or subset."""
    from pipeline.graph.stages.compare import compare_config

    tune, tuning = (load_run_config(str(ROOT / "configs" / n)) for n in ("unseen_tune.toml", "unseen.toml"))
    assert tune.sections.keys() == tuning.sections.keys()
    for name in tuning.sections.keys() - {"compare"}:
        assert tune.section(name) == tuning.section(name), name
    grid = compare_config(tune)
    assert len(grid.seeds) > 1 and not set(grid.seeds) & set(range(5))
    assert (grid.noise, grid.unseen, grid.per_class >= 96) == ("tune", "validation", True)
    report = compare_config(load_run_config(str(ROOT / "configs" / "unseen_report.toml")))
    assert grid.variants["dropout_0_1"] == report.variants["dropout_0_1"] == {}


def test_a_variant_overrides_a_training_stage_recipe_by_its_table():
    compare = CompareConfig(variants={"s2dit": {}, "ablation": {
        "dim": 32, "train_ar": {"causal_steps": 0, "critic_steps": 5}}})
    kd = TrainConfig(steps=4, model={"dim": 16, "heads": 2})
    ar = ARConfig(steps=1, causal_steps=3)
    grid = Grid(compare=compare, trainings=(Training(get_stage("kd"), kd), Training(get_stage("ar"), ar)),
                cache_url="unused", generation=1, out="unused")
    assert grid.configs("s2dit", 7) == (dataclasses.replace(kd, seed=7), dataclasses.replace(ar, seed=7))
    kd2, ar2 = grid.configs("ablation", 7)
    assert ar2 == dataclasses.replace(ar, seed=7, causal_steps=0, critic_steps=5)
    assert kd2 == dataclasses.replace(kd, seed=7, model={"dim": 32, "heads": 2})  # the model as before
    assert compare.model({"dim": 16}, "ablation") == {"dim": 32}  # the table is no model key
    with pytest.raises(ConfigError, match=r"compare\.variants\.x\.train_ar\] key 'causal_stepz' "
                                         r"\(did you mean 'causal_steps'\?\)"):
        CompareConfig(variants={"x": {"train_ar": {"causal_stepz": 0}}})
    with pytest.raises(ConfigError, match=r"compare\.variants\.x\.train_ar\] critic_steps"):
        CompareConfig(variants={"x": {"train_ar": {"critic_steps": -1}}})
    for key, why in (("model", "at the variant's top level"), ("seed", "\\[compare\\] seeds")):
        with pytest.raises(ConfigError, match=f"key '{key}': .*{why}"):
            CompareConfig(variants={"x": {"train": {key: {"dim": 8} if key == "model" else 1}}})
    # a rule across fields is refused naming the variant, before the cache is opened or a cell trains
    grid.compare = CompareConfig(variants={"idle": {"train_ar": {"steps": 0, "causal_steps": 0}}})
    with pytest.raises(ValueError, match=r"\[compare.variants\] idle: .*nothing to train"):
        check_variants(grid)


# -- the grid on a tiny cache -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    run, _, prompts = build_partial_run(tmp_path_factory.mktemp("compare") / "run", train_classes=3, seeds=2)
    return run, prompts


def _grid(run: Path, prompts, log: list[str], **compare) -> Grid:
    kd = TrainConfig(steps=4, batch_size=4, warmup_steps=1, lr=3e-3, log_every=1, checkpoint_every=2,
                     checkpoint_every_s=0, model={"dim": 16, "heads": 2})
    ar = ARConfig(steps=1, causal_steps=1, batch_size=2, warmup_steps=1, log_every=1, checkpoint_every=4,
                  checkpoint_every_s=0)
    settings = {"variants": {"s2dit": {}, "conv_only": {"layout": ["conv", "conv"]}}, "seeds": (0,),
                "lengths": (1, 2), "per_class": 2, "latency_batch": 2, "latency_repeats": 2, **compare}
    trainings = (Training(get_stage("kd"), kd), Training(get_stage("ar"), ar))
    return Grid(compare=CompareConfig(**settings), trainings=trainings, cache_url=str(run / "cache@train"),
                generation=1, out=str(run / "compare"), sample_prompts=tuple(prompts), log=log.append)


def _metrics_lines(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): len(p.read_text().splitlines())
            for p in sorted((run / "compare").glob("*/seed*/*/metrics.jsonl"))}


def test_the_grid_trains_scores_and_costs_every_cell_then_reruns_without_training(tiny_cache):
    run, prompts = tiny_cache
    log: list[str] = []
    results = run_grid(_grid(run, prompts, log, samples=1))
    assert [line for line in log if "training" in line] == [
        "s2dit seed 0: training KD", "s2dit seed 0: training AR",
        "conv_only seed 0: training KD", "conv_only seed 0: training AR"]
    on_disk = json.loads((run / "compare" / "results.json").read_text())
    assert on_disk["cells"] == results["cells"] and (run / "compare" / "index.html").stat().st_size > 0
    assert on_disk["variants"]["conv_only"]["model"]["layout"] == ["conv", "conv"]  # resolved
    assert on_disk["variants"]["s2dit"]["model"]["dim"] == 16 and on_disk["seeds"] == [0]
    assert on_disk["recipes"]["train"]["steps"] == 4
    for cell in results["cells"]:
        assert cell["ar_checkpoint"].endswith("step_000002")  # causal + DMD
        assert set(cell["scores"]["held_out_seeds"]) == {"1x", "2x"} and cell["train_seconds"]["total"] > 0
        for length, cost in cell["cost"].items():
            assert cost["passes"] == 2 and cost["chunks"] == 5 * int(length[0]) and cost["last5_s"] > 0
            assert cost["gflops"] > 0
        assert cell["samples"] == [f"{cell['variant']}/seed0/samples/sample.mp4"]  # one prompt
        assert (run / "compare" / cell["samples"][0]).stat().st_size > 0
    s2dit, conv = (c["cost"] for c in results["cells"])
    assert s2dit["2x"]["gflops"] > s2dit["1x"]["gflops"]  # SSA's KV cache grows (CPU attention counted)
    assert conv["2x"]["gflops"] == conv["1x"]["gflops"] < s2dit["1x"]["gflops"]  # a bounded state
    assert set(results["summary"]) == {"s2dit", "conv_only"} and results["pareto"]["y"] == "adherence"
    assert results["pareto"]["front"]
    # the teacher's samplers: kept once, and the same rows as in every cell's own evaluation
    teacher = results["teacher"]["held_out_seeds"]
    assert set(teacher["1x"]) == {"teacher_fullstep", "teacher_4step", "teacher_4step_unipc"}
    assert set(teacher["2x"]) == {"teacher_fullstep"} and teacher["1x"]["teacher_fullstep"]["role"] == "reference"
    for cell in results["cells"]:
        assert teacher_scores(json.loads((run / "compare" / cell["folder"] / EVAL).read_text())) == results["teacher"]
    page = (run / "compare" / "index.html").read_text()
    assert 'id="compare-teacher"' in page and "4-step UniPC" in page

    before, log[:] = _metrics_lines(run), []
    again = run_grid(_grid(run, prompts, log, samples=1))
    assert not [line for line in log if "training" in line or "scoring" in line]
    assert _metrics_lines(run) == before
    assert [c["scores"] for c in again["cells"]] == [c["scores"] for c in results["cells"]]

    log[:] = []  # LCHA's sums windowed: every cell scored (and timed) again, nothing trained
    windowed = run_grid(_grid(run, prompts, log, samples=1, lcha_window="trained"))
    assert not [line for line in log if "training" in line] and [line for line in log if "scoring" in line]
    assert json.loads((run / "compare" / "results.json").read_text())["lcha_window"] == "trained"
    plain, win = ({c["variant"]: c["scores"]["held_out_seeds"] for c in r["cells"]} for r in (again, windowed))
    assert win["s2dit"]["1x"] == plain["s2dit"]["1x"]  # within the trained length: the same stream
    assert win["conv_only"] == plain["conv_only"]  # no LCHA sums: nothing to window
    evals = {c["variant"]: json.loads((run / "compare" / c["folder"] / EVAL).read_text()) for c in windowed["cells"]}
    assert evals["s2dit"]["lcha_window"] == 3 and "lcha_window" not in evals["conv_only"]  # 5 chunks - 2
    assert "LCHA sums windowed (trained)" in (run / "compare" / "index.html").read_text()



def test_a_variant_that_equals_another_is_trained_once_and_shares_its_cells(tiny_cache, tmp_path):
    """A variant whose students equal an earlier one's (here the base width written out; in the
    memory grid a searched layout that comes out as s2dit's own) trains nothing of its own."""
    run, prompts = tiny_cache
    log: list[str] = []
    grid = _grid(run, prompts, log, variants={"s2dit": {}, "same": {"dim": 16}})
    grid.out = str(tmp_path / "compare")
    assert twin_variants(grid) == {"same": "s2dit"}
    results = run_grid(grid)
    assert [line for line in log if "training" in line] == ["s2dit seed 0: training KD", "s2dit seed 0: training AR"]
    assert any(line.startswith("same: the same students as s2dit") for line in log)
    assert not (tmp_path / "compare" / "same").exists()
    by_variant = {c["variant"]: c for c in results["cells"]}
    assert by_variant["same"]["same_as"] == "s2dit" and by_variant["same"]["folder"] == "s2dit/seed0"
    assert by_variant["same"]["scores"] == by_variant["s2dit"]["scores"]
    assert results["variants"]["same"]["same_as"] == "s2dit" and "same_as" not in results["variants"]["s2dit"]
    assert results["variants"]["same"]["model"] == results["variants"]["s2dit"]["model"]
    assert "the same students as s2dit" in (tmp_path / "compare" / "index.html").read_text()


def test_a_stage_with_the_same_recipe_and_seed_is_trained_once_per_seed():
    compare = CompareConfig(variants={"s2dit": {}, "critic_2": {"train_ar": {"critic_steps": 2}},
                                      "wide": {"dim": 32}, "lr": {"train": {"lr": 7e-3}},
                                      "wide_critic_2": {"dim": 32, "train_ar": {"critic_steps": 2}}},
                            seeds=(0, 1))
    grid = Grid(compare=compare, trainings=(Training(get_stage("kd"), TrainConfig(model={"dim": 16, "heads": 2})),
                                            Training(get_stage("ar"), ARConfig())),
                cache_url="unused", generation=1, out="unused")
    owners = {v: stage_owners(grid, v, 1) for v in compare.variants}
    assert owners == {"s2dit": {}, "critic_2": {"kd": "s2dit"}, "wide": {}, "lr": {},
                      "wide_critic_2": {"kd": "wide"}}  # the first variant with the same KD owns it
    assert waits_for(grid, "wide_critic_2", 1) == {("wide", 1)} and waits_for(grid, "lr", 1) == set()
    # side by side: a cell waits while the cell it borrows from waits or runs
    assert _next_ready(grid, [("critic_2", 0), ("wide", 0)], [("s2dit", 0)]) == ("wide", 0)
    assert _next_ready(grid, [("critic_2", 0)], [("s2dit", 0)]) is None
    assert _next_ready(grid, [("critic_2", 0)], [("s2dit", 1)]) == ("critic_2", 0)  # another seed's


def test_a_stage_2_variant_borrows_the_kd_stage_and_gets_the_bytes_of_its_own(tiny_cache, tmp_path):
    run, prompts = tiny_cache
    log: list[str] = []
    variants = {"s2dit": {}, "critic_2": {"train_ar": {"critic_steps": 2}}}
    grid = _grid(run, prompts, log, variants=variants, lengths=(1,), latency_repeats=1)
    grid.out = str(tmp_path / "shared")
    results = run_grid(grid)
    assert [line for line in log if "training" in line] == [
        "s2dit seed 0: training KD", "s2dit seed 0: training AR", "critic_2 seed 0: training AR"]
    assert "critic_2 seed 0: KD is s2dit's (the same recipe and seed): not trained again" in log
    s2dit, critic = results["cells"]
    assert critic["shared"] == {"kd": "s2dit/seed0"} and s2dit["shared"] == {}
    assert critic["kd_checkpoint"] == s2dit["kd_checkpoint"] and not (tmp_path / "shared" / "critic_2" / "seed0" / "kd").exists()
    assert critic["train_seconds"]["kd"] == s2dit["train_seconds"]["kd"]  # its student's cost from nothing
    assert results["versus"]["variants"]["critic_2"]["1x"]["adherence"]["paired"]  # seed by seed
    assert "KD: s2dit's" in html.unescape((tmp_path / "shared" / "index.html").read_text())
    # the same student as a grid that trains the variant's KD itself: same seed, same bytes
    alone = _grid(run, prompts, [], variants={"critic_2": variants["critic_2"]}, lengths=(1,), latency_repeats=1)
    alone.out = str(tmp_path / "alone")
    (own,) = run_grid(alone)["cells"]
    assert own["shared"] == {} and own["scores"] == critic["scores"]
    ours, theirs = (Path(c["ar_checkpoint"]) / "model.safetensors" for c in (critic, own))
    assert ours.read_bytes() == theirs.read_bytes()
    # the owner gone from the grid: the cell that borrowed from it is trained again
    log[:] = []
    grid.compare = dataclasses.replace(grid.compare, variants={"critic_2": variants["critic_2"]})
    (again,) = run_grid(grid)["cells"]
    assert "critic_2 seed 0: its KD came from s2dit/seed0, which no longer trains it; training it again" in log
    assert again["shared"] == {} and again["scores"] == critic["scores"]



def test_a_variant_on_some_of_the_seeds_trains_and_is_summarised_on_those(tiny_cache, tmp_path):
    """``seeds = [...]`` in a variant's table: a costly baseline on fewer seeds than the recipe
    reported (configs/unseen_report.toml's no_dropout)."""
    compare = CompareConfig(variants={"s2dit": {}, "wide": {"dim": 32, "seeds": [2]},
                                      "critic_2": {"train_ar": {"critic_steps": 2}, "seeds": [2, 0]}},
                            seeds=(0, 1, 2))
    assert [compare.seeds_of(v) for v in compare.variants] == [(0, 1, 2), (2,), (0, 2)]  # [compare]'s order
    assert compare.model({"dim": 16}, "wide") == {"dim": 32}  # seeds is not a model key
    grid = Grid(compare=compare, trainings=(Training(get_stage("kd"), TrainConfig(model={"dim": 16, "heads": 2})),
                                            Training(get_stage("ar"), ARConfig())),
                cache_url="unused", generation=1, out="unused")
    assert grid.cells() == [("s2dit", 0), ("critic_2", 0), ("s2dit", 1), ("s2dit", 2), ("wide", 2), ("critic_2", 2)]
    assert stage_owners(grid, "critic_2", 2) == {"kd": "s2dit"}
    for bad in ([3], [], [0, 0], "0"):
        with pytest.raises(ConfigError, match=r"\[compare.variants.wide\] seeds = .*some of \[compare\] seeds"):
            CompareConfig(variants={"s2dit": {}, "wide": {"dim": 32, "seeds": bad}}, seeds=(0, 1, 2))
    run, prompts = tiny_cache
    log: list[str] = []
    grid = _grid(run, prompts, log, seeds=(0, 1), lengths=(1,), latency_repeats=1, samples=1,
                 variants={"s2dit": {}, "conv_only": {"layout": ["conv", "conv"], "seeds": [1]}})
    grid.out = str(tmp_path / "some_seeds")
    results = run_grid(grid)
    assert [line for line in log if "training" in line] == [
        "s2dit seed 0: training KD", "s2dit seed 0: training AR",
        "s2dit seed 1: training KD", "s2dit seed 1: training AR",
        "conv_only seed 1: training KD", "conv_only seed 1: training AR"]
    assert results["summary"]["conv_only"]["seeds"] == [1] and results["summary"]["s2dit"]["seeds"] == [0, 1]
    conv = next(c for c in results["cells"] if c["variant"] == "conv_only")
    assert conv["samples"] == ["conv_only/seed1/samples/sample.mp4"]  # its own first seed
    assert results["variants"]["conv_only"]["model"]["layout"] == ["conv", "conv"]
    row = results["versus"]["variants"]["conv_only"]["1x"]["adherence"]
    assert (row["n_a"], row["n_b"], row["paired"]) == (2, 1, False)

def test_a_variant_that_does_not_fit_the_cache_is_refused_before_any_cell_trains(tiny_cache):
    run, prompts = tiny_cache
    log: list[str] = []
    grid = _grid(run, prompts, log, variants={"fine": {}, "odd_heads": {"dim": 18, "heads": 2}})
    with pytest.raises(ValueError, match=r"\[compare.variants\] odd_heads: dim must split into heads"):
        run_grid(grid)
    assert log == [] and not (run / "compare" / "fine").exists()


def test_an_interrupted_cell_resumes_and_a_changed_recipe_retrains(tiny_cache, tmp_path):
    run, prompts = tiny_cache
    log: list[str] = []
    grid = _grid(run, prompts, log, variants={"wide": {"layout": ["lcha", "lcha"]}}, lengths=(1,),
                 latency_repeats=1)
    record = prepare_cell(grid, "wide", 0)
    kd, _ = grid.configs("wide", 0)  # the run's training stages in order
    folder = Path(grid.folder("wide", 0))
    # a KD run killed after 2 of its 4 steps (its checkpoint at step 2 written)
    get_stage("kd").build(kd, str(folder / "kd"), cache_url=grid.cache_url).run(progress=False, stop_after=2)
    results = run_grid(grid)
    events = [json.loads(line) for line in (folder / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert [e.get("event") for e in events if "event" in e] == ["resumed"]
    assert [e["step"] for e in events if "event" not in e] == [1, 2, 3, 4]  # no step twice
    assert results["cells"][0]["resumed"] and results["summary"]["wide"]["resumed"]
    assert json.loads((folder / CELL).read_text())["identity"] == record["identity"]

    # another [train] recipe: the cell is removed and trained again from step 0
    log[:] = []
    kd_recipe, ar_recipe = grid.trainings
    grid.trainings = (Training(kd_recipe.spec, TrainConfig(**{**kd_recipe.config.to_json(), "steps": 3})),
                      ar_recipe)
    run_grid(grid)
    assert "wide seed 0: its recipe changed since it was trained; training it again" in log
    rows = [json.loads(line) for line in (folder / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]

    # a recorded checkpoint removed by hand: the cell is trained again, not scored from nothing
    log[:] = []
    shutil.rmtree(folder / "ar")
    again = run_grid(grid)
    assert any("is gone; training it again" in line for line in log)
    assert Path(again["cells"][0]["ar_checkpoint"]).is_dir()

    # a folder the grid did not write is refused, not deleted
    stranger = Path(grid.folder("wide", 7))
    stranger.mkdir(parents=True)
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="has no cell.json"):
        prepare_cell(grid, "wide", 7)
    assert (stranger / "notes.txt").read_text() == "mine"


# -- the stage in a real run ---------------------------------------------------------------------

STAGE_CONFIG = """
[run]
seed = 0
[corpus]
kind = "analytic"
train_classes = 2
[job]
seeds_per_prompt = 4
samples_per_shard = 8
num_actors = 1
[job.teacher]
kind = "analytic"
steps = 8
[train]
enabled = false  # the run's own student is not what this test is about; the grid uses the recipe
steps = 3
batch_size = 4
warmup_steps = 1
checkpoint_every = 3
checkpoint_every_s = 0
model = {dim = 16, heads = 2}
[train_ar]
steps = 1
causal_steps = 1
batch_size = 2
warmup_steps = 1
checkpoint_every_s = 0
[compare]
seeds = [0]
lengths = [1]
per_class = 2
latency_batch = 1
latency_repeats = 1
[compare.variants]
lcha_only = {layout = ["lcha", "lcha"]}
"""


def test_the_compare_stage_in_a_run_and_its_report_section(tmp_path, ray_runtime):
    from pipeline.run_api import run_config

    config_path, out = tmp_path / "compare.toml", tmp_path / "run"
    config_path.write_text(STAGE_CONFIG)
    quiet = Console(quiet=True)
    state = run_config(load_run_config(str(config_path)), out=str(out), console=quiet, progress=False)
    record = state.get("compare")
    kd_log = (out / "compare/lcha_only/seed0/kd/metrics.jsonl").read_text()
    assert record["status"] == "done" and state.get("train_kd")["status"] == "skipped"
    results = json.loads(Path(record["outputs"]["results"]).read_text())
    assert [c["variant"] for c in results["cells"]] == ["lcha_only"]
    assert results["recipes"]["train"]["steps"] == 3 and results["cache"].endswith("cache@train")
    report = (out / "report.html").read_text()
    assert 'id="compare-section"' in report and 'href="compare/index.html"' in report
    assert 'data-point="lcha_only"' in report

    # nothing changed: up to date; one more seed: the stage reruns and trains that seed only
    state = run_config(load_run_config(str(config_path)), out=str(out), console=quiet, progress=False)
    assert state.get("compare")["finished"] == record["finished"]
    state = run_config(load_run_config(str(config_path), ["compare.seeds=[0, 1]"]), out=str(out),
                       console=quiet, progress=False)
    results = json.loads((out / "compare" / "results.json").read_text())
    assert [(c["variant"], c["seed"]) for c in results["cells"]] == [("lcha_only", 0), ("lcha_only", 1)]
    assert (out / "compare/lcha_only/seed0/kd/metrics.jsonl").read_text() == kd_log  # not retrained
    assert results["summary"]["lcha_only"]["seeds"] == [0, 1]
