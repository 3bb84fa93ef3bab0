"""`s2dit train kd` as a user runs it (issue 29): from relative paths on two Ray Train workers
(which run in their trial folders, so they get absolute paths), and again on a finished run;
what it prints: a table for people, one JSON line with --json."""

from __future__ import annotations

import json

import pytest
from cache_factory import make_cache

from pipeline.cli import main

TINY_KD = """[train]
warmup_steps = 1
checkpoint_every = 2
log_every = 1

[train.model]
dim = 48
heads = 4
"""


@pytest.mark.slow  # two Ray Train workers (~50 s): the default suite keeps test_train_kd's killed-worker test
def test_train_kd_on_two_workers_from_relative_paths_trains_and_resumes(
        tmp_path, monkeypatch, capsys, ray_runtime):
    make_cache(tmp_path / "cache", seeds=1)
    (tmp_path / "tiny.toml").write_text(TINY_KD)
    monkeypatch.chdir(tmp_path)
    flags = ["train", "kd", "--cache", "cache", "--out", "out", "--workers", "2",
             "--batch-size", "8", "--config", "tiny.toml", "--json"]
    assert main([*flags, "--steps", "2"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["checkpoint"] == str(tmp_path / "out/checkpoints/step_000002")
    assert main([*flags, "--steps", "4"]) == 0  # resumes from step 2
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["checkpoint"] == str(tmp_path / "out/checkpoints/step_000004")
    rows = [json.loads(line) for line in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("event") == "resumed"] == [2]
    assert [r["step"] for r in rows if "event" not in r] == [1, 2, 3, 4]
    state = json.loads((tmp_path / "out/checkpoints/step_000004/state.json").read_text())
    assert state["manifest"]["cache_url"] == str(tmp_path / "cache")


def test_train_kd_on_a_finished_run_prints_its_checkpoint(tmp_path, capsys, monkeypatch):
    cache = make_cache(tmp_path / "cache", seeds=1)
    flags = ["train", "kd", "--cache", cache, "--out", str(tmp_path / "kd"), "--steps", "2",
             "--batch-size", "4", "--set", "model.dim=24", "--set", "model.heads=2",
             "--set", "warmup_steps=1"]
    assert main([*flags, "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["checkpoint"] == str(tmp_path / "kd/checkpoints/step_000002")
    assert first["phase_steps"] == {"kd": 2} and first["resumed_from"] is None
    assert main([*flags, "--json"]) == 0  # nothing left to train
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["checkpoint"] == first["checkpoint"] == again["resumed_from"]
    monkeypatch.setenv("COLUMNS", "80")
    assert main(flags) == 0  # for people: a table, not JSON, fitted to the terminal
    assert max(len(line.rstrip()) for line in capsys.readouterr().out.splitlines()) <= 80
    monkeypatch.setenv("COLUMNS", "400")  # (tmp_path is long: the paths fold at 80)
    assert main(flags) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("S2DiT-KD: already trained, nothing left to do checkpoint ")
    assert f"steps kd 2 time in process metrics {tmp_path / 'kd'}/metrics.jsonl" in text
    assert "{" not in text and f"next: s2dit sample --checkpoint {tmp_path / 'kd'}" in text
