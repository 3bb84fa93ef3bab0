"""How the compare grid scores and shows its cells (issue 26): ``[compare] guidance`` and
``unseen`` reach evaluate_checkpoint and, only when set, the cell's evaluation key (a grid scored
before them is not scored again); guidance is refused before anything trains for a variant whose
recipes train no conditioning dropout, and its cost is the guided sampler's; a variant whose
chunk is the whole clip (bidirectional_dmd) is kept off the Pareto plot and front, and the
tables give every variant's frames per chunk."""

from __future__ import annotations

import copy
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from test_compare import fake_results

from pipeline.compare import CompareConfig, Grid
from pipeline.compare.grid import EVAL, Training, check_guidance, evaluate_cell
from pipeline.compare.page import write_page
from pipeline.compare.rows import student_scores
from pipeline.compare.summary import summarise_grid
from pipeline.graph import RunConfigError, load_run_config
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig
from student_train.stages import get_stage

sys.path.insert(0, str(Path(__file__).parents[1] / "student_train"))
from cache_factory import analytic_records

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]


def _grid(tmp_path: Path, kd: TrainConfig | None = None, ar: ARConfig | None = None, **compare) -> Grid:
    settings = {"variants": {"s2dit": {}}, "seeds": (0,), "lengths": (1, 2), "per_class": 2, **compare}
    trainings = (Training(get_stage("kd"), kd or TrainConfig(steps=1, model={"dim": 16, "heads": 2})),
                 Training(get_stage("ar"), ar or ARConfig(steps=1, causal_steps=1)))
    return Grid(compare=CompareConfig(**settings), trainings=trainings, cache_url="unused", generation=1,
                out=str(tmp_path / "compare"), log=lambda line: None)


def test_scoring_options_reach_evaluate_checkpoint_and_the_key_only_when_set(tmp_path, monkeypatch):
    import pipeline.eval

    calls = []
    monkeypatch.setattr(pipeline.eval, "evaluate_checkpoint", lambda url, **kw: calls.append(kw) or {"x": 1})
    record = {"variant": "s2dit", "seed": 0, "ar_checkpoint": str(tmp_path / "ar")}
    grid = _grid(tmp_path)
    evaluate_cell(grid, record)
    assert "guidance" not in calls[-1] and "unseen" not in calls[-1]  # evaluate_checkpoint's defaults
    # the key cells recorded before these settings existed: they are not scored again
    assert record["eval"]["key"] == {"checkpoint": str(tmp_path / "ar"), "per_class": 2, "lengths": [1, 2],
                                     "noise": "report", "seed": 0}
    evaluate_cell(grid, record)
    assert len(calls) == 1 and (tmp_path / "compare" / "s2dit" / "seed0" / EVAL).exists()

    scored = _grid(tmp_path, guidance=3, unseen="validation", noise="tune")
    assert scored.compare.eval_options() == {"guidance": 3.0, "unseen": "validation"}
    evaluate_cell(scored, record)  # the settings changed: scored again, with them
    assert len(calls) == 2 and calls[-1]["guidance"] == 3.0 and calls[-1]["unseen"] == "validation"
    assert record["eval"]["key"]["guidance"] == 3.0 and record["eval"]["key"]["unseen"] == "validation"
    with pytest.raises(Exception, match="unseen = 'everything': must be one of 'all', 'report', 'validation'"):
        CompareConfig(variants={"s2dit": {}}, unseen="everything")

    windowed = _grid(tmp_path, guidance=3, unseen="validation", noise="tune", lcha_window="trained")
    evaluate_cell(windowed, record)  # LCHA's sums windowed: a new key, scored again with them
    assert len(calls) == 3 and calls[-1]["lcha_window"] == "trained"
    assert record["eval"]["key"]["lcha_window"] == "trained"
    assert CompareConfig(variants={"s2dit": {}}, lcha_window=13).eval_options() == {"lcha_window": 13}
    for bad in ("all", -1, 2.5, True):
        with pytest.raises(Exception, match="lcha_window"):
            CompareConfig(variants={"s2dit": {}}, lcha_window=bad)


def test_the_validation_subset_reaches_the_grid_scores():
    row = {"adherence": 0.5, "recall": 0.4, "gate": {"passed": False, "failed": ["recall"]}}
    report = {"lengths": [1], "held_out_seeds": {"student_ar_4step_streaming": row},
              "unseen_validation": {"student_ar_4step_streaming": row}}
    assert set(student_scores(report)) == {"held_out_seeds", "unseen_validation"}


def test_guidance_is_refused_for_a_variant_whose_recipes_train_no_dropout(tmp_path):
    variants = {"s2dit": {"train": {"cond_dropout": 0.1}, "train_ar": {"cond_dropout": 0.1}},
                "no_causal_phase": {"train": {"cond_dropout": 0.1}, "train_ar": {"causal_steps": 0}},
                "kd_only": {"train": {"cond_dropout": 0.1}}, "plain": {}}
    grid = _grid(tmp_path, guidance=2.0, variants=variants)
    with pytest.raises(ValueError, match=r"\[compare\] guidance = 2: .* the scored student of kd_only, plain "
                                         r"is trained with cond_dropout = 0"):
        check_guidance(grid)
    check_guidance(_grid(tmp_path, guidance=2.0, variants={k: variants[k] for k in ("s2dit", "no_causal_phase")}))
    check_guidance(_grid(tmp_path, variants=variants))  # guidance 1: nothing to refuse
    # in a run: at the config check, before the cache or any cell
    with pytest.raises(RunConfigError, match=r"\[compare\] guidance = 3: .*s2dit, full_attention"):
        load_run_config(str(ROOT / "configs" / "compare.toml"), ["compare.guidance=3"])
    load_run_config(str(ROOT / "configs" / "compare.toml"),
                    ["train.cond_dropout=0.1", "train_ar.cond_dropout=0.1", "compare.guidance=3"])


def test_the_guided_cost_is_the_doubled_batch(tmp_path):
    from cache_schema import CacheWriter
    from student_train.streaming_cost import chunk_flops
    from student_train.student import StudentCheckpoint
    from student_train.trainer import Trainer

    records, layout, fp = analytic_records(seeds=1)
    with CacheWriter(str(tmp_path / "cache"), layout=layout, fingerprint=fp, samples_per_shard=8) as w:
        for rec in records:
            w.write(rec)
    trainer = Trainer(str(tmp_path / "cache"), str(tmp_path / "kd"),
                      TrainConfig(steps=1, batch_size=4, cond_dropout=0.1, model={"dim": 16, "heads": 2}))
    student = StudentCheckpoint.load(trainer.checkpoint())
    with torch.no_grad():
        plain, guided = chunk_flops(student, 1), chunk_flops(student, 1, guidance=3.0)
    assert guided == pytest.approx(2 * plain, rel=0.05)


def _with_whole_clip(results: dict, variant: str) -> dict:
    """``results`` with ``variant``'s student sampling the whole 15-frame clip as one chunk."""
    out = copy.deepcopy(results)
    for v in out["variants"].values():
        v["train_model"]["latent_frames"] = 15
    for cell in out["cells"]:
        if cell["variant"] == variant:
            for length, cost in cell["cost"].items():
                cost["chunks"] = int(length.removesuffix("x"))
    out.update(summarise_grid(out))
    return out


def test_a_whole_clip_variant_is_off_the_pareto_plot_and_its_table_rows_say_their_unit(tmp_path):
    # the bidirectional model has the best recall: on the plot it would end the front
    results = _with_whole_clip(fake_results({"s2dit": (5.0, 0.9), "conv": (2.0, 0.3),
                                             "bidirectional_dmd": (40.0, 0.99)}), "bidirectional_dmd")
    summary, pareto = results["summary"], results["pareto"]
    assert summary["bidirectional_dmd"]["chunk"] == {"frames": 15, "whole_clip": True}
    assert summary["s2dit"]["chunk"] == {"frames": 1, "whole_clip": False}
    assert pareto["apart"] == ["bidirectional_dmd"] and "bidirectional_dmd" not in pareto["points"]
    assert pareto["front"] == ["conv", "s2dit"]

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.points, self.rows, self.text = [], [], []

        def handle_starttag(self, tag, attrs):
            if "data-point" in dict(attrs):
                self.points.append(dict(attrs)["data-point"])
            if tag == "tr":
                self.rows.append([])

        def handle_data(self, data):
            self.text.append(data)
            if self.rows:
                self.rows[-1].append(data)

    page = Page()
    page.feed(Path(write_page(results, str(tmp_path / "index.html"))).read_text())
    assert sorted(page.points) == ["conv", "s2dit"]
    text = "".join(page.text)
    assert "Not on the plot: bidirectional_dmd (15 latent frames at once)" in text
    held = [r for r in page.rows if r and r[0].startswith("bidirectional_dmd") and "1x" in r]
    versus, table = held  # the reference against it, then its row of the table
    assert versus[-1] == "per clip" and "15 (whole clip)" in table  # no per-chunk cost ratio
    assert any(r[:1] == ["s2dit \u2605"] and "1" in r for r in page.rows)
    assert any(r and r[0] == "bidirectional_dmd" and any("(per 15 frames)" in c for c in r) for r in page.rows)

    # a results.json written before (no chunk counts): nothing is set apart
    old = fake_results({"s2dit": (5.0, 0.9), "conv": (2.0, 0.3)})
    for cell in old["cells"]:
        for cost in cell["cost"].values():
            del cost["chunks"]
    old.update(summarise_grid(old))
    assert old["pareto"]["apart"] == [] and old["summary"]["s2dit"]["chunk"]["frames"] is None


def test_the_page_says_how_the_cells_were_scored(tmp_path):
    results = fake_results({"s2dit": (5.0, 0.9)})
    results.update(guidance=3.0, unseen="validation", lcha_window="trained")
    for cell in results["cells"]:
        cell["scores"]["unseen_validation"] = cell["scores"]["held_out_seeds"]
    results.update(summarise_grid(results))
    html = Path(write_page(results, str(tmp_path / "index.html"))).read_text()
    assert "guidance 3, LCHA sums windowed (trained), unseen classes: the validation subset" in html
    assert "validation subset (for recipe decisions: never a reported figure; never gated)" in html
