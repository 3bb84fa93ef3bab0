"""Output for people (pipeline/commands/output.py): `s2dit cache ls` and `cache log` as tables
that fit 80 columns, sizes in human units, a tag column, counted nouns; `--json` for machines."""

from __future__ import annotations

import datetime
import importlib.util
import json
from pathlib import Path

from rich.console import Console

from pipeline.cli import main
from pipeline.commands.cache_inspect import ls_table
from pipeline.commands.cache_versioning import log_table
from pipeline.commands.output import count, size, when

_spec = importlib.util.spec_from_file_location(
    "output_cache_factory", Path(__file__).parents[1] / "student_train" / "cache_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)

NOW = datetime.datetime(2026, 12, 6, 16, 33, 5)
URL = "s3://a-fairly-long-bucket-name/teams/video/caches/wan22-a14b-cache"


def _render(renderable, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text().splitlines()


def test_units_plurals_and_times():
    assert count(1, "shard") == "1 shard" and count(2, "shard") == "2 shards"
    assert count(0, "sample") == "0 samples" and count(1234, "sample") == "1,234 samples"
    assert size(1) == "1 byte" and size(1_500_000) == "1.5 MB" and size(3 * 10**12) == "3.0 TB"
    assert when(NOW) == "2026-12-06 16:33" == when(NOW.timestamp())


def _ls_rows():
    created = NOW.isoformat(timespec="seconds")
    base = {"parent": None, "samples": 1_200_000, "shards": 4688, "encoding": "zarr",
            "codec": "trajectory", "bytes": 48_300_000_000_000, "fingerprint": "90ed606848cde980",
            "created": created}
    return [{**base, "generation": 1, "tags": ["train", "v1-baseline"], "operation": "create"},
            {**base, "generation": 2, "tags": [], "operation": "convert", "parent": 1},
            {"generation": 3, "tags": ["broken"], "error": "manifest checksum mismatch in "
                                                           "manifests/000003.json: re-run verify"}]


def test_ls_fits_80_columns_with_every_header_and_date_whole():
    lines = _render(ls_table(URL, _ls_rows()))
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if line.startswith("gen"))
    assert header.split() == ["gen", "tags", "operation", "samples", "size", "format", "created"]
    text = "\n".join(lines)
    # the widest case: the time goes under the date (never a date cut in two)
    assert "48.3 TB" in text and "zarr/trajectory" in text and "2026-12-06" in text and "16:33" in text
    assert "1,200,000" in text and "v1-baseline" in text
    usual = _render(ls_table("runs/demo/cache", [{**_ls_rows()[0], "tags": ["train"]}]))
    assert max(len(line) for line in usual) <= 80 and "2026-12-06 16:33" in "\n".join(usual)
    assert "3 generations; teacher fingerprint 90ed606848cde980; generation 3 is unreadable" in text


def test_log_fits_80_columns_and_a_created_generation_has_no_parent():
    rows = [{"generation": 2, "operation": "filter", "parent": 1, "samples": 12, "shards": 1,
             "created_at": NOW.timestamp(), "producer_version": "s2dit-0.1.0",
             "args": {"where": 'not contains(lower(prompt), "red") and seed < 5',
                      "from": f"{URL}@1", "removed": 6}},
            {"generation": 1, "operation": "create", "parent": None, "samples": 18, "shards": 3,
             "created_at": NOW.timestamp(), "producer_version": "s2dit-0.1.0", "args": {}}]
    lines = _render(log_table(URL, rows, {"train": 1, "best": 1}))
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 80 and "None" not in text
    assert "filter of gen 2" not in text and "filter of gen 1" in text
    create = next(line for line in lines if line.split()[:1] == ["1"])
    assert create.split()[1] == "best," and " create " in create and "of gen" not in create
    assert text.index(f"from={URL[:20]}") < text.index("where=")  # where the samples came from first
    assert "2 generations" in text


def test_cache_ls_and_log_on_a_real_cache_for_people_and_machines(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    cache = factory.make_cache(tmp_path / "cache", seeds=1)
    assert main(["cache", "tag", cache, "train"]) == 0
    capsys.readouterr()
    assert main(["cache", "ls", cache]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "1 generation;" in out and " train " in out and " MB " in out and "wds/raw" in out
    assert main(["cache", "ls", cache, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["tags"] == ["train"] and row["codec"] == "raw" and isinstance(row["bytes"], int)
    assert main(["cache", "log", cache]) == 0
    out = capsys.readouterr().out
    assert "None" not in out and "create" in out and "1 generation" in out
    assert main(["cache", "log", cache, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tags"] == {"train": 1}


def test_train_prints_what_it_trained_as_a_table():
    from pipeline.commands.output import duration
    from pipeline.commands.train import launched_table
    from student_train.launch import Launched
    from student_train.stages import get_stage

    assert (duration(42.14), duration(200), duration(7500)) == ("42.1 s", "3 min 20 s", "2 h 5 min")
    done = Launched(stage=get_stage("ar"), checkpoint="s3://b/ar/checkpoints/step_000600", workers=2,
                    resumed_from="s3://b/ar/checkpoints/step_000200",
                    phase_steps={"causal": 400, "dmd": 200})
    text = " ".join(" ".join(_render(launched_table(done, "s3://b/ar"))).split())
    assert text.startswith("S2DiT-AR: trained checkpoint s3://b/ar/checkpoints/step_000600 "
                           "steps causal 400, dmd 200 resumed from s3://b/ar/checkpoints/step_000200 "
                           "time on 2 Ray Train workers metrics s3://b/ar/metrics.jsonl next: ")
    local = Launched(stage=get_stage("kd"), checkpoint="runs/kd/checkpoints/step_000002", workers=1,
                     train_seconds=75.2, phase_steps={"kd": 2})
    text = " ".join(" ".join(_render(launched_table(local, "runs/kd"))).split())
    assert "time 1 min 15 s in process" in text and "tensorboard --logdir runs/kd/tensorboard" in text


def test_messages_count_one_thing_in_the_singular():
    from teacher_jobs.sizing import UnitPlan
    from teacher_jobs.staging import StagedFile, StageRecord, StageResult, describe

    plan = UnitPlan(samples_per_shard=1, commit_every=1, seconds_per_unit=None, basis="given")
    assert plan.describe() == "units of 1 sample, a commit every 1 unit: given"
    record = StageRecord(source="w", revision=None, files={"a": StagedFile(size=10, sha256="0")})
    lines = list(describe(StageResult(url="s3://b/w", record=record, digest="d", copied=1)))
    assert lines[0].startswith("staged 1 file (0.00 GB; 1 copied")
    lines = list(describe(StageResult(url="s3://b/w", record=record, digest="d", noop=True)))
    assert "holds the same 1 file (" in lines[0]
    assert count(1, "trajectory", "trajectories") == "1 trajectory"
    assert count(3, "trajectory", "trajectories") == "3 trajectories"
