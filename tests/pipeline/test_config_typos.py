"""A typo key is blamed where it was made (issue 29): a config file's by the file, its section
and the key, with the closest valid key; a flag's as "(in flags)", a ``--set``'s by the --set.
Through `s2dit train kd | ar --config`, `s2dit run` and the typed readers themselves."""

from __future__ import annotations

import pytest

from cache_schema.typed_config import ConfigError, unknown_keys_message
from pipeline.cli import main
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig
from teacher_jobs.teachers.registry import make_settings


def test_the_message_names_each_key_and_its_closest():
    text = unknown_keys_message("train", ["stpes", "zzz"], ["steps", "lr"])
    assert text.startswith("unknown [train] keys 'stpes' (did you mean 'steps'?), 'zzz'; ")
    assert text.endswith("known: lr, steps")


@pytest.mark.parametrize("command, table, text, expected", [
    (["train", "kd"], "train", "stpes = 5", "[train] key 'stpes' (did you mean 'steps'?)"),
    (["train", "kd"], "train.model", "dimm = 3", "[train.model] key 'dimm' (did you mean 'dim'?)"),
    (["train", "ar", "--init", "i"], "train_ar", "causal_stepz = 5",
     "[train_ar] key 'causal_stepz' (did you mean 'causal_steps'?)"),
])
def test_a_typo_in_a_training_config_file_names_the_file_and_key(command, table, text, expected,
                                                                 tmp_path, capsys):
    path = tmp_path / "recipe.toml"
    path.write_text(f"[{table}]\n{text}\n")
    assert main([*command, "--cache", "c", "--out", str(tmp_path / "o"), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: unknown {expected}") and err.count("\n") == 1, err
    assert "flags" not in err and "--set" not in err and not (tmp_path / "o").exists()


def test_a_typo_in_a_run_config_names_the_file_and_section(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('[corpus]\nkind = "analytic"\n[train]\nstpes = 5\n')
    assert main(["run", str(path), "--plan", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} [train]") and "'stpes' (did you mean 'steps'?)" in err
    assert "flags" not in err


def test_flags_and_set_keep_their_own_blame(capsys):
    with pytest.raises(ConfigError, match=r"key 'stpes' \(did you mean 'steps'\?\).* \(in flags\)$"):
        TrainConfig.load(None, stpes=5)
    with pytest.raises(ConfigError, match=r"\(in flags\)$"):
        ARConfig.load(None, causal_stepz=5)
    assert main(["train", "kd", "--cache", "c", "--out", "o", "--set", "stpes=5"]) == 2
    assert capsys.readouterr().err.startswith("error: --set stpes=5: unknown [train] key 'stpes' "
                                              "(did you mean 'steps'?)")


def test_a_file_value_is_blamed_on_the_file_and_a_flag_still_overrides_a_good_one(tmp_path):
    path = tmp_path / "kd.toml"
    path.write_text("[train]\nlr = 'fast'\n")
    with pytest.raises(ConfigError, match=rf"^{path}: \[train\] lr = 'fast': must be a number"):
        TrainConfig.load(str(path), lr=1e-3)
    path.write_text("[train]\nlr = 2e-3\nsteps = 7\n")
    assert (TrainConfig.load(str(path), lr=1e-3).lr, TrainConfig.load(str(path)).steps) == (1e-3, 7)


def test_a_teacher_setting_typo_gets_the_closest_setting():
    with pytest.raises(ValueError, match=r"no setting\(s\) \['stepz'\] \(in \[job.teacher\] of "
                                         r"x.toml\) \(did you mean 'steps'\?\)"):
        make_settings({"kind": "analytic", "stepz": 3}, where="[job.teacher] of x.toml")


@pytest.mark.parametrize("section, text, expected", [
    ("report", "foo = 1", "unknown [report] key 'foo'; known: enabled"),
    ("report", "enabeld = false", "unknown [report] key 'enabeld' (did you mean 'enabled'?)"),
    ("eval", "per_clas = 2", "unknown [eval] key 'per_clas' (did you mean 'per_class'?); known: "),
    ("tag", "nmae = 'x'", "unknown [tag] key 'nmae' (did you mean 'name'?); known: name"),
    ("verify", "dep = true", "unknown [verify] key 'dep' (did you mean 'deep'?)"),
    ("sample", "cuont = 2", "unknown [sample] key 'cuont' (did you mean 'count'?)"),
    ("corpus", "train_clases = 3", ("unknown [corpus] key 'train_clases' (did you mean "
                                   "'train_classes'?)")),
])
def test_every_section_refuses_an_unknown_key_with_the_closest(section, text, expected,
                                                               tmp_path, capsys):
    path = tmp_path / "run.toml"
    corpus = 'kind = "analytic"\n' + (text + "\n" if section == "corpus" else "")
    other = "" if section == "corpus" else f"[{section}]\n{text}\n"
    path.write_text(f"[corpus]\n{corpus}{other}")
    assert main(["run", str(path), "--plan", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} [{section}]") and expected in err, err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_a_set_into_a_section_without_keys_is_refused(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('[corpus]\nkind = "analytic"\n')
    assert main(["run", str(path), "--plan", "--set", "report.titel=x",
                 "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith("error: --set report.titel=x: unknown [report] key "
                                              "'titel'; known: enabled")
