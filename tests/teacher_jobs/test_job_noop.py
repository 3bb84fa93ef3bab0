"""A rerun of `s2dit cache generate` whose every unit is committed (issue 29) is told so at once:
it starts no Ray runtime, takes no lease, writes nothing (the real run's report stays) and says
what the cache already holds."""

from __future__ import annotations

import json

import pytest

import teacher_jobs.job
from pipeline.cli import main
from teacher_jobs.config import JobConfig
from teacher_jobs.job import run_generation
from teacher_jobs.teachers import make_settings


def _config(prompts: str, output: str) -> JobConfig:
    return JobConfig(teacher=make_settings({"kind": "analytic", "steps": 4}), prompts=prompts,
                     output=output, samples_per_shard=2, seeds_per_prompt=2, num_actors=1)


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_rerun_with_nothing_to_do_starts_no_ray_and_writes_nothing(tmp_path, ray_runtime,
                                                                      monkeypatch, capsys):
    prompts, output = tmp_path / "prompts.txt", tmp_path / "cache"
    prompts.write_text("a red ring moving left\na blue cross moving right\n")
    first = run_generation(_config(str(prompts), str(output)), progress=False)
    assert first.ok and first.report["units_total"] == 2
    before = _files(output)

    def refuse(*args, **kwargs):
        raise AssertionError("a no-op rerun reached Ray or took a lease")

    for name in ("_init_ray", "ActorPool", "writer_lease"):
        monkeypatch.setattr(teacher_jobs.job, name, refuse)
    assert main(["cache", "generate", "--teacher", "analytic", "--steps", "4",
                 "--prompts", str(prompts), "--output", str(output), "--samples-per-shard", "2",
                 "--seeds-per-prompt", "2", "--num-actors", "1"]) == 0
    captured = capsys.readouterr()
    assert (f"nothing to do: {output} generation {first.manifest.generation} already holds all "
            "2 units of this corpus (4 samples in 2 shards") in captured.err
    assert "Ray was not started" in captured.err and "Traceback" not in captured.err
    printed = json.loads(captured.out)
    assert printed["units_skipped"] == printed["units_total"] == 2 and printed["samples"] == 4
    assert _files(output) == before  # no generation, lease, receipt or report written


def test_a_corpus_with_new_prompts_is_not_a_no_op(tmp_path, ray_runtime, monkeypatch):
    prompts, output = tmp_path / "prompts.txt", tmp_path / "cache"
    prompts.write_text("a red ring moving left\n")
    assert run_generation(_config(str(prompts), str(output)), progress=False).ok
    prompts.write_text("a red ring moving left\na blue cross moving right\n")
    started = _Started()
    monkeypatch.setattr(teacher_jobs.job, "_init_ray", started)
    with pytest.raises(_Started.Reached):
        run_generation(_config(str(prompts), str(output)), progress=False)
    assert started.calls == 1


class _Started:
    """Stands in for Ray's start: records that the job got that far, then stops it."""

    class Reached(Exception):
        pass

    def __init__(self):
        self.calls = 0

    def __call__(self, config):
        self.calls += 1
        raise self.Reached
