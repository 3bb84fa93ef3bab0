"""The stage graph's bookkeeping on stages defined here (each appends to a log and writes its
output file): skip what is up to date, rerun what changed and everything downstream, --from,
--only, disabled stages, failures recorded, folders it did not write refused; the run config's
includes and refusals by name; the TOML it writes reads back."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import fsspec
import pytest
from rich.console import Console

from pipeline.graph import STAGES, RunConfigError, StageOrderError, load_run_config, run_graph
from pipeline.graph.runner import check_config
from pipeline.graph.stage import Stage, StageContext
from pipeline.graph.toml_out import dumps

QUIET = Console(quiet=True)


def any_keys(config) -> None:
    """A toy stage reads its section unchecked (a section no stage checks takes no keys)."""


def _toy_stages(log: list[str], fail: set[str] | None = None) -> tuple[Stage, ...]:
    def make(name: str, section: str):
        def run(ctx: StageContext) -> dict:
            log.append(name)
            if fail and name in fail:
                raise RuntimeError(f"{name} broke\nsecond line")
            with fsspec.open(ctx.path(f"{name}.out"), "w") as handle:
                handle.write(json.dumps(ctx.config.section(section)))
            return {"file": ctx.path(f"{name}.out")}
        return run

    return (Stage(name="a", title="first", section="corpus", run=make("a", "corpus"), writes=("a.out",),
                  check=any_keys),
            Stage(name="b", title="second", section="train", run=make("b", "train"), needs=("a",), writes=("b.out",),
                  check=any_keys),
            Stage(name="c", title="third", section="train_ar", run=make("c", "train_ar"), needs=("b",), writes=("c.out",),
                  check=any_keys),
            Stage(name="d", title="fourth", section="sample", run=make("d", "sample"), uses=("a", "c"),
                  writes=("d.out",), check=any_keys))


def _config(tmp_path: Path, text: str):
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return load_run_config(str(path))


BASE = "[corpus]\nkind = 'inline'\n[train]\nsteps = 1\n[train_ar]\nsteps = 1\n"


def test_rerun_skips_what_is_up_to_date_and_reruns_a_change_and_its_downstream(tmp_path):
    log: list[str] = []
    run = str(tmp_path / "run")
    run_graph(_config(tmp_path, BASE), _toy_stages(log), run, console=QUIET)
    assert log == ["a", "b", "c", "d"]
    run_graph(_config(tmp_path, BASE), _toy_stages(log), run, console=QUIET)
    assert log == ["a", "b", "c", "d"]  # nothing changed: nothing ran
    state = run_graph(_config(tmp_path, BASE.replace("[train]\nsteps = 1", "[train]\nsteps = 2")),
                      _toy_stages(log), run, console=QUIET)
    assert log[4:] == ["b", "c", "d"]
    assert json.loads(Path(state.get("b")["outputs"]["file"]).read_text())["steps"] == 2
    # an output removed by hand is made again (and what follows it)
    (tmp_path / "run" / "c.out").unlink()
    run_graph(_config(tmp_path, BASE.replace("steps = 1", "steps = 2", 1)), _toy_stages(log), run, console=QUIET)
    assert log[7:] == ["c", "d"]


def test_from_only_and_disabled_stages(tmp_path):
    log: list[str] = []
    run = str(tmp_path / "run")
    config = _config(tmp_path, BASE)
    with pytest.raises(StageOrderError, match="its input stages"):
        run_graph(config, _toy_stages(log), run, only="b", console=QUIET)
    run_graph(config, _toy_stages(log), run, console=QUIET)
    run_graph(config, _toy_stages(log), run, from_stage="c", console=QUIET)
    assert log[4:] == ["c", "d"]
    run_graph(config, _toy_stages(log), run, only="b", console=QUIET)
    assert log[6:] == ["b"]
    run_graph(config, _toy_stages(log), run, console=QUIET)  # b reran: c and d are stale
    assert log[7:] == ["c", "d"]
    with pytest.raises(StageOrderError, match="'nope' is not a stage"):
        run_graph(config, _toy_stages(log), run, from_stage="nope", console=QUIET)
    disabled = _config(tmp_path, BASE.replace("[train_ar]\n", "[train_ar]\nenabled = false\n"))
    state = run_graph(disabled, _toy_stages(log), run, console=QUIET)
    assert log[9:] == ["d"]  # c skipped; d used c, so it reruns without it
    assert state.get("c")["status"] == "skipped" and "enabled = false" in state.get("c")["reason"]



def test_stage_titles_and_skip_reasons_print_their_brackets(tmp_path):
    """A title such as compare's "(with [compare])" is text, not rich markup to drop."""
    log: list[str] = []
    stages = list(_toy_stages(log))
    stages[0] = dataclasses.replace(stages[0], title="the prompts (with [corpus])")
    console = Console(record=True, width=200)
    config = _config(tmp_path, BASE.replace("[train_ar]\n", "[train_ar]\nenabled = false\n"))
    run_graph(config, tuple(stages), str(tmp_path / "run"), console=console)
    text = console.export_text()
    assert "1/4 a: the prompts (with [corpus])" in text
    assert "3/4 c: third: skipped (disabled: [train_ar] enabled = false)" in text, text

def test_a_failure_is_recorded_and_a_folder_it_did_not_write_is_refused(tmp_path):
    log: list[str] = []
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="b broke"):
        run_graph(_config(tmp_path, BASE), _toy_stages(log, fail={"b"}), str(run), console=QUIET)
    state = json.loads((run / "run_state.json").read_text())["stages"]
    assert state["b"]["status"] == "failed" and state["b"]["error"] == "RuntimeError: b broke"
    assert state["c"] == {"status": "pending"}
    run_graph(_config(tmp_path, BASE), _toy_stages(log), str(run), console=QUIET)
    assert log == ["a", "b", "b", "c", "d"]  # a was not redone
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.out").write_text("someone's file")
    with pytest.raises(FileExistsError, match="does not record"):
        run_graph(_config(tmp_path, BASE), _toy_stages(log), str(other), console=QUIET)
    assert (other / "a.out").read_text() == "someone's file"


def test_a_run_folder_on_object_storage(tmp_path, s3_bucket):
    """--out s3://...: the state, run.toml and outputs live in the bucket; a rerun skips."""
    log: list[str] = []
    run = f"{s3_bucket}/runs/toy"
    run_graph(_config(tmp_path, BASE), _toy_stages(log), run, console=QUIET)
    state = run_graph(_config(tmp_path, BASE), _toy_stages(log), run, console=QUIET)
    assert log == ["a", "b", "c", "d"] and state.get("d")["status"] == "done"
    fs, root = fsspec.core.url_to_fs(run)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(root)) == \
        ["a.out", "b.out", "c.out", "d.out", "run.toml", "run_state.json"]


def test_run_config_includes_seeds_and_refusals(tmp_path):
    (tmp_path / "recipe.toml").write_text("[train]\nlr = 0.5\nsteps = 9\n[train.model]\ndim = 8\nheads = 2\n")
    config = _config(tmp_path, "[run]\nseed = 7\n[corpus]\nkind = 'analytic'\n"
                               "[train]\ninclude = 'recipe.toml'\nsteps = 3\n[train.model]\ndim = 16\n")
    assert config.section("train") == {"lr": 0.5, "steps": 3, "model": {"dim": 16, "heads": 2}, "seed": 7}
    assert tomllib.loads(dumps(config.resolved())) == config.resolved()
    for text, message in (("[corpus]\n[trian]\n", "unknown sections \\['trian'\\]"),
                          ("[job]\nencoding = 'wds'\n", "no \\[corpus\\] section"),
                          ("[corpus]\n[job]\noutput = 'x'\n", "\\[job\\] output .* the run sets it"),
                          ("[corpus]\n[train_ar]\ninclude = 'recipe.toml'\n", "has no \\[train_ar\\] table"),
                          ("[corpus]\n[run]\nsteps = 1\n", "unknown \\[run\\] key 'steps'")):
        with pytest.raises(RunConfigError, match=message):
            _config(tmp_path, text)
    # every stage's section is checked before any runs, the error naming file and section
    with pytest.raises(RunConfigError, match=r"cfg.toml \[train\] \(stage train_kd\): unknown .*'stepz'"):
        check_config(_config(tmp_path, "[corpus]\nkind = 'analytic'\n[train]\nstepz = 3\n"), STAGES)
    with pytest.raises(RunConfigError, match=r"\[corpus\] .*kind must be one of"):
        check_config(_config(tmp_path, "[corpus]\nkind = 'web'\n"), STAGES)


def test_toml_writer_round_trips_what_configs_hold():
    data = {"run": {"out": "s3://b/r \"x\"", "seed": 0}, "job": {"frames": 17, "keep": [0, 2],
            "teacher": {"kind": "wan", "guidance": [4.0, 3.0], "offload": None}},
            "train": {"model": {"layout": ["lcha", "ssa:2"]}, "lr": 1e-3, "flag": True}}
    back = tomllib.loads(dumps(data))
    del data["job"]["teacher"]["offload"]  # None: left out (TOML has no null)
    assert back == data


def test_run_command_refuses_by_name(tmp_path, capsys):
    from pipeline.cli import main

    config = tmp_path / "run.toml"
    config.write_text("[corpus]\nkind = 'analytic'\n")
    for argv, expected in (([str(config)], "no run folder: pass --out URL or set [run] out"),
                           ([str(config), "--out", str(tmp_path / "r"), "--only", "train_kd"],
                            "--only train_kd: its input stages ['tag'] have not finished"),
                           ([str(tmp_path / "missing.toml")], "missing.toml does not exist")):
        assert main(["run", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err, err


def test_a_failed_stage_still_leaves_a_report_of_the_partial_run(tmp_path, capsys):
    from pipeline.cli import main

    config = tmp_path / "run.toml"
    config.write_text("[corpus]\nkind = 'inline'\nprompts = []\n")
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "needs prompts = ['...', ...]" in captured.err
    state = json.loads((tmp_path / "r" / "run_state.json").read_text())["stages"]
    assert state["corpus"]["status"] == "failed" and state["generate"] == {"status": "pending"}
    assert f"partial report: {tmp_path / 'r' / 'report.html'}" in captured.out
    assert (tmp_path / "r" / "report.html").stat().st_size > 0


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_plan_predicts_what_the_run_then_does_and_writes_nothing(tmp_path):
    """`s2dit run --plan`: for a fresh folder, an unchanged one, a changed section, --from,
    --only and a failed stage, the stages the plan says would run are exactly the ones the run
    then runs, and the plan leaves the folder byte for byte as it was."""
    from pipeline.graph.plan import WOULD_RUN, plan_graph

    run = tmp_path / "run"
    changed = BASE.replace("[train]\nsteps = 1", "[train]\nsteps = 2")
    scenarios = [  # (config text, run_graph keywords, stages that fail)
        (BASE, {}, {"c"}), (BASE, {}, set()), (BASE, {}, set()), (changed, {}, set()),
        (changed, {"from_stage": "c"}, set()), (changed, {"only": "b"}, set()),
        (BASE, {}, set()),
    ]
    for text, flags, fail in scenarios:
        config = _config(tmp_path, text)
        before = _snapshot(run) if run.exists() else None
        plan = plan_graph(config, _toy_stages([]), str(run), **flags)
        assert (_snapshot(run) if run.exists() else None) == before
        log: list[str] = []
        try:
            run_graph(_config(tmp_path, text), _toy_stages(log, fail), str(run), console=QUIET, **flags)
        except RuntimeError:
            pass
        expected = [s.stage for s in plan if s.action in WOULD_RUN]
        assert log == expected[: len(log)] and (fail or log == expected), (text, flags, plan, log)
    # the last scenario ran again on BASE after `changed`: b's inputs changed
    assert [(s.stage, s.action) for s in plan] == [("a", "up to date"), ("b", "run"), ("c", "run"),
                                                  ("d", "run")]
    assert plan[1].why.startswith("its inputs changed") and plan[2].why == "upstream b reruns"


def test_plan_names_the_keys_that_changed_with_their_old_and_new_values(tmp_path):
    from pipeline.graph.plan import plan_graph

    run = str(tmp_path / "run")
    first = BASE.replace("[train]\nsteps = 1", "[train]\nsteps = 1\nlr = 5e-3\n[train.model]\ndim = 8")
    run_graph(_config(tmp_path, first), _toy_stages([]), run, console=QUIET)
    edited = first.replace("lr = 5e-3", "lr = 3e-3\nkd_fraction = 0.5").replace("dim = 8", "dim = 16")
    plan = {s.stage: s for s in plan_graph(_config(tmp_path, edited), _toy_stages([]), run)}
    assert plan["b"].action == "run" and plan["b"].why == (
        "its inputs changed since it was done: [train] kd_fraction (unset) -> 0.5, "
        "lr 0.005 -> 0.003, model.dim 8 -> 16")
    assert plan["c"].why == "upstream b reruns"
    # b rerun alone: c's recorded inputs name b's earlier run
    run_graph(_config(tmp_path, edited), _toy_stages([]), run, only="b", console=QUIET)
    plan = {s.stage: s for s in plan_graph(_config(tmp_path, edited), _toy_stages([]), run)}
    assert plan["c"].why == "its inputs changed since it was done: upstream b ran again"


def test_plan_predicts_the_skips_a_disabled_stage_brings_and_ends(tmp_path):
    """A stage that needs a newly disabled one is skipped by the run, and runs again once it is
    enabled again: the plan says so, not "up to date" or "skip" from the old records."""
    from pipeline.graph.plan import WOULD_RUN, plan_graph

    run = str(tmp_path / "run")
    disabled = BASE.replace("[train]\n", "[train]\nenabled = false\n")
    for text, expected in ((BASE, None), (disabled, [("b", "skip"), ("c", "skip"), ("d", "run")]),
                           (BASE, [("b", "run"), ("c", "run"), ("d", "run")])):
        plan = plan_graph(_config(tmp_path, text), _toy_stages([]), run)
        log: list[str] = []
        state = run_graph(_config(tmp_path, text), _toy_stages(log), run, console=QUIET)
        assert log == [s.stage for s in plan if s.action in WOULD_RUN]
        assert [s.stage for s in plan if s.action == "skip"] == \
            [n for n, r in state.stages.items() if r["status"] == "skipped"]
        if expected:
            assert [(s.stage, s.action) for s in plan][1:] == expected, plan
    assert plan[1].why.startswith("its inputs changed since it was skipped: [train] enabled false -> true")


def test_plan_of_a_fresh_folder_says_every_stage_is_not_run_yet(tmp_path):
    from pipeline.graph.plan import plan_graph

    plan = plan_graph(_config(tmp_path, BASE), _toy_stages([]), str(tmp_path / "new"))
    assert [(s.action, s.why) for s in plan] == [("run", "not run yet")] * 4
    assert not (tmp_path / "new").exists()
    with pytest.raises(StageOrderError, match="--only 'zz' is not a stage"):
        plan_graph(_config(tmp_path, BASE), _toy_stages([]), str(tmp_path / "new"), only="zz")


def test_s2dit_run_plan_prints_the_plan_of_the_real_stages_without_running(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "fresh"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(root / "configs/demo.toml"),
                           "--out", str(out), "--plan"], capture_output=True, text=True, timeout=300,
                          cwd=root, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(stage.name in done.stdout for stage in STAGES)
    assert done.stdout.count("not run yet") == len(STAGES) - 1  # all but compare: no section
    assert "has no compare section" in done.stdout
    assert not out.exists()


def test_the_printed_plan_keeps_the_section_names_of_its_reasons(tmp_path, monkeypatch):
    # rich reads "[train]" as markup and would drop it from the table
    from rich.console import Console

    import pipeline.run_api
    from pipeline.graph.plan import Step

    why = "its inputs changed since it was done: [train] lr 0.005 -> 0.003"
    monkeypatch.setattr(pipeline.run_api, "plan_graph", lambda *a, **k: [Step("train_kd", "run", why)])
    console = Console(record=True, width=200)
    pipeline.run_api.plan_config(_config(tmp_path, BASE), out=str(tmp_path / "run"), console=console)
    assert "[train] lr 0.005 -> 0.003" in console.export_text()
