"""`s2dit run --out` (issue 28): a folder that is not a run is refused before anything is
written, and so are the filesystem root, the home directory and a bucket's root; a new or empty
folder and an earlier run's folder still run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from pipeline.cli import main
from pipeline.graph import load_run_config, run_graph
from pipeline.graph import runner as graph_runner
from pipeline.graph.run_folder import RunFolderRefused, check_run_folder
from pipeline.graph.stage import Stage, StageContext

QUIET = Console(quiet=True)
# A config that would fail its own check (an unknown [train] key) if the folder were accepted:
# a broken folder check can then never write into / or $HOME while this test runs.
TRIPWIRE = "[corpus]\nkind = 'analytic'\n[train]\nno_such_key = 1\n"


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path below ``root`` with its bytes (None for a folder) and its mtime in the key."""
    return {f"{p.relative_to(root)}@{p.stat().st_mtime_ns}": (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _one_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return captured.err


@pytest.mark.parametrize("state", [None, "{broken", "[]", '{"stages": {}}', "dir"])
def test_out_into_a_folder_that_is_not_a_run_is_refused_byte_for_byte(tmp_path, capsys, state):
    config = tmp_path / "run.toml"
    config.write_text("[corpus]\nkind = 'analytic'\n")
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "run.toml").write_text("# the user's own run.toml\n")
    (mine / "sub" / "notes.txt").write_text("keep me")
    if state == "dir":
        (mine / "run_state.json").mkdir()
    elif state is not None:
        (mine / "run_state.json").write_text(state)
    before = _tree(mine)
    for extra in ([], ["--plan"]):
        assert main(["run", str(config), "--out", str(mine), "--no-progress", *extra]) == 2
        err = _one_error(capsys)
        assert str(mine) in err and "nothing was written" in err
        assert _tree(mine) == before


def test_the_filesystem_root_the_home_directory_and_a_bucket_root_are_refused(
        tmp_path, capsys, monkeypatch, s3_bucket):
    config = tmp_path / "run.toml"
    config.write_text(TRIPWIRE)
    root_before = sorted(p.name for p in Path("/").iterdir())
    assert main(["run", str(config), "--out", "/", "--no-progress"]) == 2
    assert "is the filesystem root" in _one_error(capsys)
    assert sorted(p.name for p in Path("/").iterdir()) == root_before  # no /run.toml
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for out in (str(home), f"{home}/../home/", "~"):
        with pytest.raises(RunFolderRefused, match="your home directory"):
            check_run_folder(str(Path(out).expanduser()))
    assert main(["run", str(config), "--out", str(home), "--no-progress"]) == 2
    assert "your home directory" in _one_error(capsys)
    assert not list(home.iterdir())
    assert main(["run", str(config), "--out", s3_bucket, "--no-progress"]) == 2
    assert "the root of its store" in _one_error(capsys)
    check_run_folder(f"{s3_bucket}/runs/r")  # a folder inside the bucket is fine


def _stages(log: list[str]) -> tuple[Stage, ...]:
    def run(ctx: StageContext) -> dict:
        log.append("a")
        Path(ctx.path("a.out")).write_text("a")
        return {}

    return (Stage(name="a", title="first", section="corpus", run=run, writes=("a.out",),
                  check=lambda config: None),)  # reads [corpus] unchecked


def test_a_new_or_empty_folder_and_a_run_folder_still_run(tmp_path, monkeypatch):
    config = tmp_path / "cfg.toml"
    config.write_text("[corpus]\nkind = 'inline'\n")
    log: list[str] = []
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, tmp_path / "new" / "deeper"):
        run_graph(load_run_config(str(config)), _stages(log), str(out), console=QUIET)
        assert json.loads((out / "run_state.json").read_text())["stages"]["a"]["status"] == "done"
        run_graph(load_run_config(str(config)), _stages(log), str(out), console=QUIET)  # a run folder
    assert log == ["a", "a"]  # each ran once; the second time it was up to date
    # a run killed right after it started (before run.toml) left a run folder, not someone's
    killed = tmp_path / "killed"

    def die(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(graph_runner, "write_run_config", die)
    with pytest.raises(KeyboardInterrupt):
        run_graph(load_run_config(str(config)), _stages(log), str(killed), console=QUIET)
    assert [p.name for p in killed.iterdir()] == ["run_state.json"]
    check_run_folder(str(killed))
    monkeypatch.undo()
    run_graph(load_run_config(str(config)), _stages(log), str(killed), console=QUIET)
    assert log == ["a", "a", "a"]


def test_a_rerun_replaces_the_partial_report_of_a_failed_run(tmp_path, capsys):
    config = tmp_path / "cfg.toml"
    config.write_text("[corpus]\nkind = 'inline'\nprompts = []\n")  # the corpus stage fails
    run = tmp_path / "r"
    assert main(["run", str(config), "--out", str(run), "--no-progress"]) == 2
    state = json.loads((run / "run_state.json").read_text())
    assert state["stages"]["corpus"]["status"] == "failed" and "report.html" in state["partial"]
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(run), "--only", "report", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "removing its old outputs" in out and "Traceback" not in out
    state = json.loads((run / "run_state.json").read_text())
    assert state["stages"]["report"]["status"] == "done" and "partial" not in state
    assert (run / "report.html").stat().st_size > 0
