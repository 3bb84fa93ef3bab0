"""The analytic corpus's splits (issue 26): the default split is today's; "pairs_seen" trains
every attribute pair of the held-out classes; the held-out classes split again into disjoint
"validation" and "report" subsets; the README's held-out count is the default vocabulary's."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from pipeline.graph.config import RunConfigError
from teacher_jobs.analytic_corpus import (
    DEFAULT_ANALYTIC,
    class_prompts,
    pinning_pairs,
    split_classes,
    split_shortcuts,
    unseen_pairs,
    unseen_subsets,
)

ROOT = Path(__file__).parents[2]


def _attrs(prompt: str) -> tuple[str, str, str]:
    _, colour, obj, _, motion = prompt.split()
    return obj, colour, motion


def test_the_default_split_is_todays():
    train, held = split_classes()
    assert split_classes(split="random") == (train, held)
    assert held == ["a red square moving right", "a red ring moving left", "a green ring moving left",
                    "a green ring moving right", "a green cross moving right",
                    "a blue cross moving right"]
    # ... and it holds out a pair never trained: a green ring
    assert unseen_pairs([_attrs(p) for p in train], [_attrs(p) for p in held]) == [("ring", "green")]


@pytest.mark.parametrize(("seed", "train_classes"), [(0, 12), (1, 12), (2, 10), (3, 9)])
def test_pairs_seen_trains_every_pair_of_every_held_out_class(seed, train_classes):
    train, held = split_classes(seed=seed, train_classes=train_classes, split="pairs_seen")
    assert len(train) == train_classes and sorted(train + held) == sorted(class_prompts())
    trained = [_attrs(p) for p in train]
    for h in map(_attrs, held):
        for i, j in itertools.combinations(range(3), 2):
            assert any(t[i] == h[i] and t[j] == h[j] for t in trained), (h, i, j)


def test_pairs_seen_keeps_a_random_split_that_already_has_the_property_and_refuses_the_impossible():
    assert split_classes(seed=1, split="pairs_seen") == split_classes(seed=1)  # seed 1 has it
    with pytest.raises(ValueError, match="raise train_classes"):
        split_classes(train_classes=2, split="pairs_seen")
    with pytest.raises(ValueError, match="split must be one of"):
        split_classes(split="pairs")


VALUES = (3, 3, 2)  # objects, colours, motions of the default vocabulary


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pairs_varied_trains_every_pair_of_a_held_out_class_with_two_values_of_the_third(seed):
    train, held = split_classes(seed=seed, split="pairs_varied")
    assert len(train) == 12 and sorted(train + held) == sorted(class_prompts())
    trained = [_attrs(p) for p in train]
    for h in map(_attrs, held):
        for i, j in itertools.combinations(range(3), 2):
            third = {t[3 - i - j] for t in trained if t[i] == h[i] and t[j] == h[j]}
            assert len(third) >= min(2, VALUES[3 - i - j] - 1), (h, i, j, third)


def test_pairs_seen_of_run_seed_0_pins_the_object_of_every_held_out_class_and_pairs_varied_does_not():
    """Run seed 0's pairs_seen split (the unseen report's) holds out every "moving left" class but
    one object per colour: in training, a colour and "left" name one object (and an object and
    "left" one colour)."""
    train, held = split_classes(seed=0, split="pairs_seen")
    trained, unseen = [_attrs(p) for p in train], [_attrs(p) for p in held]
    assert {m for _, _, m in unseen} == {"left"}
    assert {t[0] for t in trained if t[1:] == ("green", "left")} == {"cross"}
    assert set(pinning_pairs(trained, unseen, VALUES)) == {
        (a, "left") for a in ("red", "green", "blue", "square", "ring", "cross")}
    varied = split_classes(seed=0, split="pairs_varied")
    assert not pinning_pairs(*([_attrs(p) for p in part] for part in varied), VALUES)
    with pytest.raises(ValueError, match="two values of the third attribute"):
        split_classes(train_classes=4, split="pairs_varied")


def test_validation_and_report_subsets_are_disjoint_and_a_function_of_the_set():
    _, held = split_classes()
    subsets = unseen_subsets(held)
    assert subsets == unseen_subsets(list(reversed(held)))
    assert len(subsets["validation"]) == 2 and len(subsets["report"]) == 4
    assert not set(subsets["validation"]) & set(subsets["report"])
    assert sorted(subsets["validation"] + subsets["report"]) == sorted(held)
    assert unseen_subsets(held[:1]) == {"validation": [], "report": held[:1]}


def test_the_readme_and_configs_state_the_default_held_out_count():
    classes = len(class_prompts(DEFAULT_ANALYTIC))
    o, c, m = (len(DEFAULT_ANALYTIC.objects), len(DEFAULT_ANALYTIC.colours), len(DEFAULT_ANALYTIC.motions))
    held = len(split_classes()[1])
    assert (o * c * m, held) == (18, 6) == (classes, held)
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"12 attribute combinations .* the other {held} of the {classes} "
                     rf"\({o} objects x {c} colours x {m} motions\) held out", readme)
    assert f"the other {held} of the {classes} ({c} x {o} x {m}) are held out" in \
        (ROOT / "configs/demo.toml").read_text()


def test_the_corpus_stage_takes_the_split_and_refuses_an_unknown_one():
    from pipeline.graph.config import RunConfig
    from pipeline.graph.stages.corpus import _section

    def section(**corpus):
        return _section(RunConfig(source="run.toml", sections={"corpus": corpus}))

    assert section(split="pairs_seen")["split"] == "pairs_seen"
    with pytest.raises(RunConfigError, match="split must be one of"):
        section(split="pairz")


def test_split_shortcuts_name_what_pins_each_held_out_class():
    train, held = split_classes(seed=0, split="pairs_seen")
    shortcuts = split_shortcuts(train, held)
    assert sorted(shortcuts) == sorted(held)  # every one of run seed 0's
    assert shortcuts["a green ring moving left"] == ["a green cross moving left", "a blue ring moving left"]
    assert split_shortcuts(*split_classes(seed=0, split="pairs_varied")) == {}


@pytest.mark.parametrize(("config", "warned"), [("unseen_report.toml", True), ("unseen_varied.toml", False)])
def test_the_corpus_stage_warns_of_a_split_that_pins_held_out_classes(tmp_path, capsys, config, warned):
    from pipeline.cli import main

    assert main(["run", str(ROOT / "configs" / config), "--out", str(tmp_path / "run"), "--only", "corpus",
                 "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert ("6 of the 6 held-out combinations are pinned in training" in out) == warned
    if warned:
        assert "split = \"pairs_varied\" leaves none" in out
