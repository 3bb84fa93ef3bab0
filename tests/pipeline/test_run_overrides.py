"""`--set SECTION.KEY=VALUE` on `s2dit run` and `s2dit demo` (pipeline/graph/overrides.py and
load.apply_overrides): any key of any section, read as TOML, checked by the stages' validators;
a typo or a wrong type is one `error:` line naming the override. `s2dit demo` takes every
`s2dit run` flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.graph import RunConfigError, load_run_config
from pipeline.graph.overrides import parse_value

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs/demo.toml")


@pytest.mark.parametrize("raw,value", [
    ("3e-3", 3e-3), ("50", 50), ("true", True), ("[0.9, 0.95]", [0.9, 0.95]), ('"text"', "text"),
    ("cuda", "cuda"), ("a b", "a b"), ("1\nx = 2", "1\nx = 2"),
])
def test_a_value_is_toml_else_the_text(raw, value):
    assert parse_value(raw) == value


def test_overrides_reach_any_key_of_any_section_and_sub_table():
    config = load_run_config(DEMO, ["train.lr=3e-3", "train_ar.causal_steps=50",
                                    "train.model.dim=64", "job.teacher.steps=12",
                                    "train.device=cpu", "eval.per_class=3", "train_ar.enabled=false"])
    resolved = config.resolved()
    assert resolved["train"]["lr"] == 3e-3 and resolved["train"]["device"] == "cpu"
    assert resolved["train"]["model"]["dim"] == 64
    assert resolved["train"]["model"]["heads"] == 4  # the rest of the included table is kept
    assert resolved["job"]["teacher"]["steps"] == 12 and resolved["job"]["teacher"]["kind"] == "analytic"
    assert resolved["train_ar"]["causal_steps"] == 50 and not config.enabled("train_ar")
    assert resolved["eval"]["per_class"] == 3
    assert load_run_config(DEMO).resolved()["train"]["lr"] == 5e-3  # the file is unchanged


@pytest.mark.parametrize("override,expected", [
    ("train.lrr=3e-3", "unknown [train] key 'lrr' (did you mean 'lr'?)"),
    ("train.lr=fast", "[train] lr = 'fast': must be a number"),
    ("train_ar.causal_stepz=50", "(did you mean 'causal_steps'?)"),
    ("train.model.dimm=64", "unknown [train.model] key 'dimm' (did you mean 'dim'?)"),
    ("job.seeds_per_prompts=3", "(did you mean 'seeds_per_prompt'?)"),
    ("job.teacher.stepz=3", "no setting(s) ['stepz'] (in [job.teacher])"),
    ("run.outt=x", "unknown [run] key 'outt' (did you mean 'out'?)"),
    ("trian.lr=1", "no section [trian] (did you mean 'train'?)"),
    ("train.lr", "give SECTION.KEY=VALUE"),
    ("train.model=3", "model = 3: must be a table"),
    ("train_ar.enabled=no", "enabled must be true or false"),
])
@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_bad_override_is_one_error_line_naming_it(command, override, expected, tmp_path, capsys):
    head = ["run", DEMO] if command == "run" else ["demo"]
    code = main([*head, "--plan", "--out", str(tmp_path / "run"), "--set", "train.lr=1e-3",
                 "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and err.startswith(f"error: --set {override}")
    assert expected in err and "(in flags)" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_typo_in_the_file_is_blamed_on_the_file_by_key(tmp_path, capsys):
    for section, text, expected in (
            ("train", "lrr = 1", "unknown [train] key 'lrr' (did you mean 'lr'?)"),
            ("job", "seeds_per_prompts = 1", "unknown [job] key 'seeds_per_prompts'")):
        path = tmp_path / f"{section}.toml"
        path.write_text(f'[corpus]\nkind = "analytic"\n[{section}]\n{text}\n')
        assert main(["run", str(path), "--plan", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and str(path) in err and expected in err
        assert "flags" not in err
        # an override of the same section does not take the blame for the file
        with pytest.raises(RunConfigError) as raised:
            load_run_config(str(path), [f"{section}.seed=1"])
        assert str(path) in str(raised.value) and "--set" not in str(raised.value)


def test_demo_takes_every_run_flag_and_plans_with_overrides(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--plan", "--only", "train_kd", "--set",
                 "train.lr=3e-3", "--set", "train_ar.causal_steps=50", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "train_kd" in printed and "--only train_kd" in printed
    assert not out.exists()  # a plan writes nothing
    assert main(["demo", "--out", str(out), "--plan", "--from", "train_ar"]) == 0
    run_flags = {a.dest for a in _parser("run")._actions} - {"config"}
    assert run_flags <= {a.dest for a in _parser("demo")._actions}


def test_set_has_the_last_word_over_demo_flags(monkeypatch):
    from pipeline.commands import demo

    seen = {}

    def execute(config, args):
        seen["config"] = config
        return 0

    monkeypatch.setattr(demo, "execute", execute)
    assert main(["demo", "--train-steps", "7", "--set", "train.steps=9"]) == 0
    assert seen["config"].section("train")["steps"] == 9


def _parser(command: str):
    from pipeline.cli import build_parser

    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command]
