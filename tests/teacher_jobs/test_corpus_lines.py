"""Issue 17: a bad corpus line is rejected alone, with its line number (never its whole unit,
never after a shard is written); a corpus with no valid prompt is refused before any Ray actor
starts."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main as cli
from teacher_jobs import job
from teacher_jobs.config import JobConfig
from teacher_jobs.corpus import load_corpus


def test_bad_jsonl_lines_are_rejected_one_by_one(tmp_path):
    lines = [{"prompt": "a red square moving left", "seed": 1},
             {"prompt": "a red ring moving left", "negative_prompt": 5},
             {"prompt": "a blue ring moving left", "seed": 2**70},
             {"prompt": "a blue ring moving right", "seed": 1.5},
             {"prompt": "a green ring moving right", "seed": True},
             {"prompt": "a green cross moving right", "seed": []},
             {"prompt": "a green square moving left", "seed": [3, "x"]},
             [1, 2],
             {"prompt": "a blue square moving left", "seed": 2.0, "negative_prompt": "blurry"}]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    entries, rejected = load_corpus(str(path))
    assert [(e.line, e.seed) for e in entries] == [(1, 1), (9, 2)]
    reasons = {r.line: r.reason for r in rejected}
    assert reasons == {
        2: "negative_prompt must be a string, got int",
        3: f"seed {2**70} is outside int64 [{-(2**63)}, {2**63 - 1}]",
        4: "seed 1.5 is not an integer", 5: "seed True is not an integer",
        6: "'seed' is an empty list: no trajectory to record", 7: "seed 'x' is not an integer",
        8: "not a JSON object: b'[1, 2]'", 10: reasons[10]}
    assert reasons[10].startswith("bad JSON line")


@pytest.mark.parametrize("content", ["", "\n\n   \n", '{"prompt": 3}\n'])
def test_a_corpus_without_a_valid_prompt_is_refused_before_ray(content, tmp_path, monkeypatch,
                                                               capsys):
    path = tmp_path / ("c.jsonl" if "{" in content else "c.txt")
    path.write_text(content)
    monkeypatch.setattr(job, "_init_ray", lambda config: pytest.fail("Ray was started"))
    with pytest.raises(ValueError, match="holds no valid prompt"):
        job.run_generation(JobConfig(prompts=str(path), output=str(tmp_path / "out")),
                           progress=False)
    assert not (tmp_path / "out" / "manifests").exists()
    assert cli(["cache", "generate", "--prompts", str(path), "--output",
                str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert err.strip().startswith("error: prompt corpus") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err
