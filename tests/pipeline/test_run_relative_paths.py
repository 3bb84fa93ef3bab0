"""Relative paths on the command line (issue 29): made absolute before they reach Ray actors
or run_state.json (the teacher actors do not run in the caller's working folder)."""

from __future__ import annotations

import json

from pipeline.cli import main
from pipeline.graph import bundled_config
from pipeline.graph.state import STATE_FILE
from teacher_jobs.config import JobConfig


def test_a_run_from_a_relative_folder_records_absolute_paths(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", bundled_config("demo.toml"), "--out", "runs/rel", "--only", "corpus",
                 "--no-progress"]) == 0
    capsys.readouterr()
    state = json.loads((tmp_path / "runs/rel" / STATE_FILE).read_text())
    assert state["stages"]["corpus"]["outputs"]["prompts"] == str(tmp_path / "runs/rel/prompts.txt")


def test_a_job_config_names_its_corpus_and_cache_absolutely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = JobConfig(prompts="prompts.txt", output="caches/a@train")
    assert (config.prompts, config.output) == (str(tmp_path / "prompts.txt"),
                                               str(tmp_path / "caches/a@train"))
    assert JobConfig(prompts="s3://b/p.txt", output="memory://c").output == "memory://c"
