"""Evaluation on unseen attribute combinations (issue 26): the errors named per class (which
attribute, which trained neighbour), the "validation" and "report" subsets scored apart and
said, and the student rows sampled with classifier-free guidance when asked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from cache_schema import CacheWriter
from pipeline.eval import evaluate_checkpoint, format_report
from student_train.config import TrainConfig
from student_train.trainer import Trainer
from teacher_jobs.analytic_corpus import split_classes, unseen_subsets
from teacher_jobs.teachers.analytic import AnalyticTeacher
from teacher_jobs.teachers.analytic_errors import class_errors, format_errors

sys.path.insert(0, str(Path(__file__).parents[1] / "student_train"))
from cache_factory import analytic_records

pytestmark = pytest.mark.usefixtures("one_thread")
EVAL = {"per_class": 2, "reference_cache": "off"}


def test_errors_name_the_attribute_and_the_trained_neighbour():
    teacher = AnalyticTeacher()
    train, held = split_classes()
    trained = {teacher.class_of(p) for p in train}
    prompts = [p for p in held for _ in range(4)]
    x0 = teacher.sample_true_data(prompts)
    # "a red square moving right" drawn as the trained "a red square moving left" three times
    x0[:3] = teacher.sample_true_data(["a red square moving left"] * 3, seed=1)
    rows = class_errors(teacher, x0, prompts, trained)
    assert [r["class"] for r in rows] == held
    first = rows[0]
    assert first["adherence"] == 0.25 and first["neighbour"] == "a red square moving left"
    assert first["wrong"] == {"object": 0.0, "colour": 0.0, "motion": 0.75}
    assert first["neighbour_share"] == 0.75
    assert all(r["adherence"] == 1.0 and r["neighbour"] is None for r in rows[1:])


def test_errors_name_the_trained_classes_a_split_pins_a_held_out_class_to():
    """Run seed 0's pairs_seen split trains "green, left" and "ring, left" only as the green
    cross and the blue ring: the held-out green ring moving left is pinned to both; a
    pairs_varied split pins nothing, and a trained class is never pinned."""
    teacher = AnalyticTeacher()
    for split, expected in (("pairs_seen", ["a green cross moving left", "a blue ring moving left"]),
                            ("pairs_varied", [])):
        train, held = split_classes(seed=0, split=split)
        trained = {teacher.class_of(p) for p in train}
        prompts = held + train[:1]
        rows = class_errors(teacher, teacher.sample_true_data(prompts), prompts, trained)
        pinned = {r["class"]: r["pinned_by"] for r in rows}
        assert pinned[train[0]] == []
        if split == "pairs_seen":
            assert pinned["a green ring moving left"] == expected
            line = format_errors(rows)[held.index("a green ring moving left")]
            assert line.endswith("pinned by 'a green cross moving left', 'a blue ring moving left'")
        assert all(pinned[h] == [] for h in held) == (split == "pairs_varied")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A KD checkpoint (trained with conditioning dropout) on a cache of the 12 trained classes."""
    root = tmp_path_factory.mktemp("unseen")
    records, layout, fp = analytic_records(seeds=1)
    train = set(split_classes()[0])
    with CacheWriter(str(root / "cache"), layout=layout, fingerprint=fp, samples_per_shard=8) as w:
        for rec in records:
            if rec["prompt"] in train:
                w.write(rec)
    trainer = Trainer(str(root / "cache"), str(root / "kd"),
                      TrainConfig(steps=1, batch_size=4, cond_dropout=0.1, model={"dim": 24, "heads": 2}))
    torch.manual_seed(0)
    for model in (trainer.model, trainer.ema):
        for p in model.parameters():
            p.data.normal_(0, 0.1)
    return trainer.checkpoint()


def test_unseen_rows_name_their_errors_and_the_subsets_are_scored_apart(checkpoint):
    held = split_classes()[1]
    whole = evaluate_checkpoint(checkpoint, **EVAL)
    assert whole["unseen_subset"] == "all"
    rows = whole["unseen_combinations"]
    errors = rows["student_4step"]["errors"]
    assert [e["class"] for e in errors] == held and all(e["samples"] == 2 for e in errors)
    assert "errors" not in rows["teacher_fullstep"] and "errors" not in whole["held_out_seeds"]["student_4step"]
    text = format_report(whole)
    assert "wrong:" in text or "adherence 1.00" in text
    subsets = unseen_subsets(held)
    validation = evaluate_checkpoint(checkpoint, unseen="validation", **EVAL)
    assert "unseen_combinations" not in validation and validation["unseen_subset"] == "validation"
    got = [e["class"] for e in validation["unseen_validation"]["student_4step"]["errors"]]
    assert got == subsets["validation"]
    assert "unseen: validation" in format_report(validation)
    report = evaluate_checkpoint(checkpoint, unseen="report", **EVAL)
    got = [e["class"] for e in report["unseen_combinations"]["student_4step"]["errors"]]
    assert got == subsets["report"] and report["unseen_subset"] == "report"


def test_guidance_changes_the_student_rows_only(checkpoint):
    plain = evaluate_checkpoint(checkpoint, unseen="validation", **EVAL)
    guided = evaluate_checkpoint(checkpoint, unseen="validation", guidance=4.0, **EVAL)
    assert guided["guidance"] == 4.0 and "guidance" not in plain
    for name in ("held_out_seeds", "unseen_validation"):
        assert guided[name]["teacher_fullstep"] == plain[name]["teacher_fullstep"]
        assert guided[name]["student_4step"]["dispersion_ratio"] != plain[name]["student_4step"]["dispersion_ratio"]
    assert "guidance 4.0" in format_report(guided)


def test_text_to_video_samples_with_guidance_and_records_it(checkpoint, tmp_path):
    import json

    import numpy as np

    from pipeline.text_to_video import SampleConfig, generate

    prompts = split_classes()[1][:2]
    run = lambda name, g: generate(SampleConfig(checkpoint=checkpoint, prompts=prompts, video=False,
                                                out=str(tmp_path / name), guidance=g))
    plain, guided = run("plain", 1.0), run("guided", 3.0)
    assert "guidance" not in plain and guided["guidance"] == 3.0
    assert json.loads((tmp_path / "guided.json").read_text())["guidance"] == 3.0
    assert not np.array_equal(np.load(tmp_path / "plain.npy"), np.load(tmp_path / "guided.npy"))


def test_a_stream_window_bounds_the_streaming_rows_and_keeps_the_trained_length(checkpoint):
    """``s2dit eval --stream-window trained``: at the trained length every chunk still sees its
    whole past (the same scores); past it the stream is bounded (other samples); the report says
    so, and whole-clip rows are refused (the bound is a streaming one)."""
    options = {"streaming": True, "whole_clip": False, "lengths": (1, 2), "unseen": "validation", **EVAL}
    plain = evaluate_checkpoint(checkpoint, **options)
    bounded = evaluate_checkpoint(checkpoint, stream_window="trained", **options)
    assert "stream_window" not in plain and bounded["stream_window"] >= 1
    assert "streamed with SSA window" in format_report(bounded) and bounded["stream_sink"] == "first"
    for name in ("held_out_seeds", "unseen_validation"):
        one, other = plain[name]["student_4step_streaming"], bounded[name]["student_4step_streaming"]
        two, other2 = plain[name]["student_4step_streaming_2x"], bounded[name]["student_4step_streaming_2x"]
        at_1x = abs(other["dispersion_ratio"] - one["dispersion_ratio"])  # rounding only
        at_2x = abs(other2["dispersion_ratio"] - two["dispersion_ratio"])  # random weights: small
        assert at_1x < 1e-7 * one["dispersion_ratio"] and at_2x > 100 * at_1x, (at_1x, at_2x)
        assert bounded[name]["teacher_fullstep"] == plain[name]["teacher_fullstep"]
    with pytest.raises(ValueError, match="--streaming-only"):
        evaluate_checkpoint(checkpoint, stream_window=2, **EVAL)
    # LCHA's sums windowed to the trained length: the same at 1x, another stream at 2x
    windowed = evaluate_checkpoint(checkpoint, lcha_window="trained", **options)
    assert windowed["lcha_window"] == bounded["stream_window"] and "LCHA window" in format_report(windowed)
    one, other = (r["held_out_seeds"]["student_4step_streaming"]["dispersion_ratio"] for r in (plain, windowed))
    two, other2 = (r["held_out_seeds"]["student_4step_streaming_2x"]["dispersion_ratio"] for r in (plain, windowed))
    assert abs(one - other) < 1e-7 * one and abs(two - other2) > 100 * abs(one - other)
