"""The run graph's eval stages take ``[eval] guidance``, ``unseen`` and ``lcha_window`` as
``s2dit eval --guidance --unseen --lcha-window`` does (issue 26): passed to evaluate_checkpoint,
refused early by name where they cannot apply (guidance for a student the config trains without
conditioning dropout, a subset the corpus has no classes for), whatever the order of the --set
flags; left out, the section (the stage's fingerprint) is as before and evaluate_checkpoint gets
its defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from pipeline.graph import STAGES, RunConfigError, load_run_config
from pipeline.graph.fingerprint import digest
from pipeline.graph.runner import _inputs, check_config
from pipeline.graph.stage import StageContext
from pipeline.graph.state import RunState

ROOT = Path(__file__).resolve().parents[2]
MEMORY = str(ROOT / "configs" / "memory.toml")


def _check(*sets: str) -> None:
    check_config(load_run_config(MEMORY, list(sets)), STAGES)


def test_guidance_is_refused_for_a_student_the_config_trains_without_dropout():
    with pytest.raises(RunConfigError, match=r"--set eval.guidance=3: \[eval\] guidance 3 needs a student "
                                             r"trained with conditioning dropout, and the student train_kd"):
        _check("eval.guidance=3")
    # KD with dropout, but S2DiT-AR's causal phase retrains the model without: eval_ar is refused
    for sets in (("eval.guidance=3", "train.cond_dropout=0.1"), ("train.cond_dropout=0.1", "eval.guidance=3")):
        with pytest.raises(RunConfigError, match="the student train_ar trains"):
            _check(*sets)
    # both phases with dropout, in either order of the flags; or no causal phase (the KD model's mode)
    _check("eval.guidance=3", "train.cond_dropout=0.1", "train_ar.cond_dropout=0.1")
    _check("train_ar.cond_dropout=0.1", "eval.guidance=3", "train.cond_dropout=0.1")
    _check("eval.guidance=3", "train.cond_dropout=0.1", "train_ar.causal_steps=0")
    # a disabled training stage has no eval stage to refuse; guidance 1 is no guidance
    _check("eval.guidance=3", "train.cond_dropout=0.1", "train_ar.enabled=false")
    _check("eval.guidance=1")
    for bad in ("0", "-1", "true", "'strong'"):
        with pytest.raises(RunConfigError, match=r"\[eval\] guidance must be a number > 0"):
            _check(f"eval.guidance={bad}")


def test_a_guidance_in_the_file_is_blamed_on_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(f'[corpus]\ninclude = "{MEMORY}"\n[eval]\ninclude = "{MEMORY}"\nguidance = 2.5\n')
    with pytest.raises(RunConfigError, match=r"run.toml \[eval\] \(stage eval_kd, eval_ar\): \[eval\] "
                                             r"guidance 2.5 needs"):
        check_config(load_run_config(str(path)), STAGES)
    check_config(load_run_config(str(path), ["train.cond_dropout=0.2", "train_ar.cond_dropout=0.2"]), STAGES)


def test_an_unseen_subset_is_refused_where_the_corpus_has_no_classes_for_it():
    _check("eval.unseen='validation'")  # 12 of 18 trained: 2 validation, 4 report classes
    _check("eval.unseen='report'", "corpus.train_classes=17")  # 1 held out: it is the report subset
    with pytest.raises(RunConfigError, match=r"\[eval\] unseen = 'validation': the analytic corpus "
                                             r"holds out 1 class\(es\) \(\[corpus\] train_classes = 17"):
        _check("corpus.train_classes=17", "eval.unseen='validation'")
    with pytest.raises(RunConfigError, match="holds out 0 class"):
        _check("eval.unseen='report'", "corpus.train_classes=18")
    with pytest.raises(RunConfigError, match=r"\[eval\] unseen must be one of \['all', 'report', 'validation'\]"):
        _check("eval.unseen='seen'")


def _ctx(tmp_path: Path, *sets: str) -> StageContext:
    config = load_run_config(MEMORY, list(sets))
    if not any(s.startswith("eval.lcha_window") for s in sets):  # an [eval] of none of the options
        del config.sections["eval"]["lcha_window"]  # (configs/memory.toml's own sets it)
    state = RunState(url=str(tmp_path / "run_state.json"), stages={s.name: {"status": "pending"} for s in STAGES})
    for name in ("train_kd", "train_ar"):
        state.stages[name] = {"status": "done", "outputs": {"checkpoint": str(tmp_path / name)}}
    return StageContext(run_dir=str(tmp_path), config=config, state=state, console=Console(quiet=True))


def test_the_stage_passes_them_to_evaluate_checkpoint_and_fingerprints_them_only_when_set(tmp_path, monkeypatch):
    from pipeline.graph.stages import evaluate

    calls = []

    def fake(checkpoint, **options):
        calls.append(options)
        return {"checkpoint": checkpoint, "step": 1, "trained_classes": 12, "per_class": 96}

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", fake)
    (stage,) = [s for s in STAGES if s.name == "eval_ar"]
    plain = _ctx(tmp_path)
    stage.run(plain)
    assert calls[-1]["guidance"] == 1.0 and calls[-1]["unseen"] == "all"  # evaluate_checkpoint's defaults
    section = _inputs(stage, plain)["section"]
    assert section == {"per_class": 96, "lengths": [1, 2, 4], "seed": 0}  # as before: same fingerprint

    sets = ("train.cond_dropout=0.1", "train_ar.cond_dropout=0.1", "eval.guidance=3", "eval.unseen='validation'")
    guided = _ctx(tmp_path, *sets)
    stage.run(guided)
    assert calls[-1]["guidance"] == 3.0 and calls[-1]["unseen"] == "validation"
    assert _inputs(stage, guided)["section"] == {**section, "guidance": 3, "unseen": "validation"}
    assert digest(_inputs(stage, guided)["section"]) != digest(section)

    windowed = _ctx(tmp_path, "eval.lcha_window='trained'")
    stage.run(windowed)  # the streaming stage's sums windowed, as s2dit eval --lcha-window trained
    assert calls[-1]["lcha_window"] == "trained" and calls[-2]["lcha_window"] is None
    assert _inputs(stage, windowed)["section"] == {**section, "lcha_window": "trained"}
    (kd,) = [s for s in STAGES if s.name == "eval_kd"]
    kd.run(windowed)  # the KD model's figures are whole clips: nothing streams
    assert calls[-1]["lcha_window"] is None
    memory = load_run_config(MEMORY)  # the shipped config streams past the trained length so
    assert memory.section("eval")["lcha_window"] == "trained"


def test_an_lcha_window_is_a_number_of_chunks_or_trained():
    _check("eval.lcha_window=13")
    for bad in ("-1", "true", "'all'", "2.5"):
        with pytest.raises(RunConfigError, match=r"\[eval\] lcha_window must be a number of past chunks"):
            _check(f"eval.lcha_window={bad}")

