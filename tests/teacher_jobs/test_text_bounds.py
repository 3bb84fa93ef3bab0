"""A job refuses a prompt or a config the cache's readers would refuse (issue 28): a prompt
beyond cache_schema.bounds.MAX_TEXT_BYTES is rejected with the corpus's other bad lines, a
negative prompt that long (in the config or a corpus line) before any teacher or Ray starts."""

from __future__ import annotations

import json

import pytest

from cache_schema.bounds import MAX_TEXT_BYTES
from pipeline.cli import main as cli
from teacher_jobs import job
from teacher_jobs.config import JobConfig
from teacher_jobs.corpus import load_corpus
from teacher_jobs.prompts import validate_prompt

LONG = "a red square moving left " * (MAX_TEXT_BYTES // 25 + 1)  # > 1 MiB of UTF-8


def test_a_prompt_or_negative_prompt_beyond_the_readers_bound_is_rejected_by_line(tmp_path):
    assert "more than the 1048576 every reader accepts" in validate_prompt(LONG)
    assert validate_prompt(LONG[:MAX_TEXT_BYTES - 1]) is None
    lines = [{"prompt": "a red square moving left", "seed": 1},
             {"prompt": LONG, "seed": 2},
             {"prompt": "a blue ring moving left", "seed": 3, "negative_prompt": LONG}]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    entries, rejected = load_corpus(str(path))
    assert [e.line for e in entries] == [1]
    reasons = {r.line: r.reason for r in rejected}
    assert "bytes of UTF-8, more than the 1048576" in reasons[2]
    assert reasons[3].startswith("negative_prompt: ") and "1048576" in reasons[3]


def test_a_negative_prompt_beyond_the_readers_bound_refuses_the_config_before_ray(
        tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match=r"\[job.teacher\] negative_prompt: \d+ bytes of UTF-8"):
        JobConfig(teacher={"kind": "analytic", "negative_prompt": LONG})
    corpus = tmp_path / "c.txt"
    corpus.write_text("a red square moving left\n")
    config = tmp_path / "job.toml"
    config.write_text(f"[job.teacher]\nkind = 'analytic'\nnegative_prompt = '{LONG}'\n")
    monkeypatch.setattr(job, "_init_ray", lambda config: pytest.fail("Ray was started"))
    assert cli(["cache", "generate", "--config", str(config), "--prompts", str(corpus),
                "--output", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    # the config file itself is over the config reader's 1 MiB bound, which refuses it first
    # (cache_schema/config_file.py); either refusal names what to fix in one line
    assert err.startswith(("error: [job.teacher] negative_prompt: ", f"error: job config {config} is larger than"))
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err and not (tmp_path / "out").exists()
