"""Issue 17: every config (the job, its teacher section, both training stages, the student
model) is typed and range-checked by one validator (cache_schema/typed_config.py). A value of
the wrong type or outside its range is a ValueError naming the table, the key and the value,
never a traceback of another type; the CLI prints it as one `error:` line and exits 2."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_schema.typed_config import ConfigError, field_rules
from pipeline.cli import main
from student_train.config import TrainConfig
from student_train.model.config import StudentConfig
from student_train.self_forcing.config import ARConfig
from teacher_jobs.config import JobConfig
from teacher_jobs.teachers.analytic_settings import AnalyticSettings
from teacher_jobs.teachers.spec import TeacherSettings
from teacher_jobs.teachers.wan_settings import WanSettings

CONFIGS = {"job": JobConfig, "job.teacher": AnalyticSettings, "job.teacher (wan)": WanSettings,
           "train": TrainConfig, "train_ar": ARConfig, "train.model": StudentConfig}
FIELDS = [(table, cls, name) for table, cls in CONFIGS.items() for name in field_rules(cls)]
EXAMPLES = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6))
any_value = st.one_of(scalars, st.lists(scalars, max_size=4),
                      st.dictionaries(st.text(max_size=4), scalars, max_size=2))


def wrong_type(kind: Any, value: Any) -> bool:
    """The test's own reading of the type rules (independent of the validator's code)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return False
    if origin in (Union, types.UnionType):
        return value is not None and all(wrong_type(a, value) for a in args if a is not type(None))
    if origin is Literal:
        return value not in args
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return any(wrong_type(args[0], v) for v in value)
        return len(value) != len(args) or any(wrong_type(a, v) for a, v in zip(args, value))
    if origin is dict or kind is dict:
        return not isinstance(value, dict)
    if kind is bool:
        return type(value) is not bool
    if kind is int:
        return type(value) is not int
    if kind is float:
        return type(value) not in (int, float) or (type(value) is float and not math.isfinite(value))
    if kind is str:
        return type(value) is not str
    return not isinstance(value, kind)


def build(cls: type, name: str, value: Any):
    return cls(**{name: value})


def assert_names(exc: BaseException, table: str, name: str) -> None:
    text = str(exc)
    assert f"[{table.split(' ')[0]}] {name} = " in text, text
    assert "must be" in text, text


def test_every_field_has_a_rule_and_every_number_a_range():
    for cls in CONFIGS.values():
        rules = field_rules(cls)
        assert set(rules) == {f.name for f in dataclasses.fields(cls)}
        for name, (kind, limit) in rules.items():
            numeric = {int, float} & {kind, *typing.get_args(kind),
                                      *(a for t in typing.get_args(kind) for a in typing.get_args(t))}
            if numeric:
                assert limit is not None and (limit.lo is not None or limit.choices), (cls, name)


@pytest.mark.parametrize("table,cls,name", FIELDS, ids=[f"{t}.{n}" for t, _, n in FIELDS])
@EXAMPLES
@given(value=any_value)
def test_a_wrong_type_names_the_key(table, cls, name, value):
    kind, _ = field_rules(cls)[name]
    if typing.get_origin(kind) is None and isinstance(kind, type) and issubclass(kind, TeacherSettings):
        return  # [job] teacher takes a table or a spec string: test_any_value_is_a_value_error
    if name == "guidance" and not wrong_type(float, value if not isinstance(value, list)
                                            or len(value) != 1 else value[0]):
        return  # one number (or [x]) is both experts' guidance, by design
    if not wrong_type(kind, value):
        return
    with pytest.raises(ValueError) as caught:
        build(cls, name, value)
    assert isinstance(caught.value, ConfigError)
    assert_names(caught.value, table, name)


def outside(limit, integer: bool) -> st.SearchStrategy:
    """Values of the right type just and far outside ``limit``."""
    if limit.choices is not None:
        return st.text(max_size=8).filter(lambda v: v not in limit.choices)
    options = []
    if limit.lo is not None:
        below = math.ceil(limit.lo) - 1
        options.append(st.integers(below - 2**66, below))
        if not integer:
            options.append(st.floats(-1e300, limit.lo, exclude_max=not limit.lo_open))
    if limit.hi is not None:
        above = math.floor(limit.hi) + 1
        options.append(st.integers(above, above + 2**66))
        if not integer:
            options.append(st.floats(limit.hi, 1e300, exclude_min=not limit.hi_open))
    return st.one_of(options)


RANGED = [(t, c, n) for t, c, n in FIELDS
          if field_rules(c)[n][1] is not None and (field_rules(c)[n][1].lo is not None
                                                   or field_rules(c)[n][1].hi is not None
                                                   or field_rules(c)[n][1].choices)]


@pytest.mark.parametrize("table,cls,name", RANGED, ids=[f"{t}.{n}" for t, _, n in RANGED])
@EXAMPLES
@given(data=st.data())
def test_a_value_outside_its_range_names_the_key_and_the_range(table, cls, name, data):
    kind, limit = field_rules(cls)[name]
    args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple and args[-1] is Ellipsis:
        return  # tuple[str, ...] (layout) has a length rule, not a value range
    element = args[0] if typing.get_origin(kind) is tuple else kind
    integer = element is int or int in typing.get_args(element)
    bad = data.draw(outside(limit, integer))
    if typing.get_origin(kind) is tuple:  # one element of the default out of range
        value = list(getattr(cls(), name))
        value[data.draw(st.integers(0, len(value) - 1))] = bad
    else:
        value = bad
    with pytest.raises(ConfigError) as caught:
        build(cls, name, value)
    assert_names(caught.value, table, name)
    assert limit.describe() in str(caught.value)


@pytest.mark.parametrize("table,cls", list(CONFIGS.items()), ids=list(CONFIGS))
@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_value_is_a_value_error_or_a_config(table, cls, data):
    """Any JSON-like value in any field: a config or a ValueError (never TypeError & co)."""
    name = data.draw(st.sampled_from(sorted(field_rules(cls))))
    value = data.draw(any_value)
    try:
        build(cls, name, value)
    except ValueError:
        pass


@pytest.mark.parametrize("cls,values,message", [
    (TrainConfig, {"steps": 100_000_000}, "[train] steps = 100000000: must be an integer in [1, 10000000]"),
    (JobConfig, {"teacher": {"guidance": [1, 2, 3]}},
     "[job.teacher] guidance = [1, 2, 3]: must be a list of 2 numbers, each in [0.0, 100.0]"),
    (JobConfig, {"num_actors": 1.5}, "[job] num_actors = 1.5: must be an integer in [1, 100000]"),
    (JobConfig, {"commit_every": -1}, "[job] commit_every = -1: must be an integer in [1, 1000000]"),
    (JobConfig, {"max_retries": -1}, "[job] max_retries = -1: must be an integer in [0, 1000]"),
    (JobConfig, {"seed": 2**63}, "[job] seed = 9223372036854775808: must be an integer in [-2^63, 2^63 - 1]"),
    (TrainConfig, {"seed": -1}, "[train] seed = -1: must be an integer in [0, 2^63 - 1]"),
    (ARConfig, {"seed": "7"}, "[train_ar] seed = '7': must be an integer in [0, 2^63 - 1]"),
    (JobConfig, {"height": "64"}, "[job] height = '64': must be an integer in [1, 8192]"),
    (JobConfig, {"teacher": {"steps": 24.0}}, "[job.teacher] steps = 24.0: must be an integer"),
    (TrainConfig, {"sigma_jitter": 1}, "[train] sigma_jitter = 1: must be true or false"),
    (TrainConfig, {"model": {"dim": 0}}, "[train.model] dim = 0: must be an integer in [1, 65536]"),
    (ARConfig, {"betas": [0.9]}, "[train_ar] betas = [0.9]: must be a list of 2 numbers"),
    (JobConfig, {"half_dtype": "float64"}, "[job] half_dtype = 'float64': must be one of 'float16', 'bfloat16'"),
])
def test_the_issue_cases_name_key_value_and_range(cls, values, message):
    with pytest.raises(ValueError) as caught:
        cls(**values)
    assert message in str(caught.value)


def test_valid_values_keep_their_bytes():
    """Same defaults and the same resolved JSON: ints stay ints where floats are typed (a
    teacher fingerprint holds them), lists become tuples, the guidance pair is floats."""
    job = JobConfig(teacher={"kind": "analytic", "shift": 3, "guidance": 2})
    assert job.teacher.shift == 3 and type(job.teacher.shift) is int
    assert job.teacher.guidance == (2.0, 2.0)
    assert TrainConfig(betas=[0.5, 0.9]).betas == (0.5, 0.9)
    assert StudentConfig(patch=[1, 2, 2]).patch == (1, 2, 2)
    assert JobConfig().to_json() == JobConfig(**{k: v for k, v in JobConfig().to_json().items()
                                                 if k != "teacher"}).to_json()


BAD_JOB = """[job]
prompts = "{tmp}/p.txt"
output = "{tmp}/cache"
{line}
"""


@pytest.mark.parametrize("line,key", [
    ("num_actors = 1.5", "[job] num_actors = 1.5"), ("commit_every = -1", "[job] commit_every = -1"),
    ("max_retries = -3", "[job] max_retries = -3"), ("height = '64'", "[job] height = '64'"),
    ("[job.teacher]\nsteps = 100000000", "[job.teacher] steps = 100000000"),
    ("[job.teacher]\nguidance = [1, 2, 3]", "[job.teacher] guidance = [1, 2, 3]"),
    ("teacher = 5", "[job] teacher = 5"),
])
def test_cache_generate_with_a_bad_config_is_one_error_line(line, key, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a red cat\n")
    (tmp_path / "bad.toml").write_text(BAD_JOB.format(tmp=tmp_path, line=line))
    assert main(["cache", "generate", "--config", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == err.strip().splitlines()
    assert len(err.strip().splitlines()) == 1 and key in err and "Traceback" not in err, err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("line,key", [
    ("steps = 100000000", "[train] steps = 100000000"), ("lr = 'fast'", "[train] lr = 'fast'"),
    ("betas = [0.9]", "[train] betas = [0.9]"), ("seed = -1", "[train] seed = -1"),
    ("batch_size = 0", "[train] batch_size = 0"),
    ("[train.model]\nheads = 2.5", "[train.model] heads = 2.5"),
])
def test_train_kd_with_a_bad_config_is_one_error_line(line, key, tmp_path, capsys):
    (tmp_path / "bad.toml").write_text(f"[train]\n{line}\n")
    assert main(["train", "kd", "--cache", str(tmp_path), "--out", str(tmp_path / "run"),
                 "--config", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and key in err, err
    assert "Traceback" not in err
