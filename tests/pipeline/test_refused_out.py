"""A refused command leaves no output folder (issue 28): `s2dit run`, `s2dit cache generate`
and `s2dit train kd / ar` check their config first and create `--out` after, on a local path
and on S3; a valid run still creates it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from pipeline.cli import main
from student_train import distributed

_spec = importlib.util.spec_from_file_location(
    "refused_cache_factory", Path(__file__).parents[1] / "student_train" / "cache_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)

# config text -> what the one error line must name
BAD_RUNS = {
    "[corpus]\nkind = 'analytic'\n[train]\nno_such_key = 1\n": "unknown [train] key 'no_such_key'",
    "[corpus]\nkind = 'analytic'\n[job]\nheight = 33\n": "[job] height = 33",  # teacher limits
    "[corpus]\nkind = 'analytic'\n[job]\nframes = 100000\n": "[job] frames = 100000",
}


def _one_error(capsys, expected: str) -> None:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert expected in captured.err and "Traceback" not in captured.err + captured.out


def _s3_keys(bucket: str) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    return fs.find(bucket)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return factory.make_cache(tmp_path_factory.mktemp("refused") / "cache", seeds=1)


@pytest.mark.parametrize("text", list(BAD_RUNS))
def test_a_refused_run_creates_no_folder(tmp_path, capsys, s3_bucket, text):
    config = tmp_path / "run.toml"
    config.write_text(text)
    for out in (tmp_path / "new" / "deeper", f"{s3_bucket}/runs/r"):
        assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 2
        _one_error(capsys, BAD_RUNS[text])
    assert not (tmp_path / "new").exists()  # before: an empty folder, parents and all
    assert _s3_keys(s3_bucket) == []


def test_only_a_stage_whose_inputs_never_ran_creates_no_folder(tmp_path, capsys, s3_bucket):
    config = tmp_path / "run.toml"
    config.write_text("[corpus]\nkind = 'analytic'\n")
    for out in (tmp_path / "r", f"{s3_bucket}/runs/r"):
        assert main(["run", str(config), "--out", str(out), "--only", "train_kd",
                     "--no-progress"]) == 2
        _one_error(capsys, "--only train_kd: its input stages ['tag'] have not finished")
    assert not (tmp_path / "r").exists()  # before: run_state.json and run.toml
    assert _s3_keys(s3_bucket) == []


def test_a_valid_run_still_creates_its_folder(tmp_path, capsys, s3_bucket):
    config = tmp_path / "run.toml"
    config.write_text("[corpus]\nkind = 'analytic'\n")
    local, remote = tmp_path / "new" / "deeper", f"{s3_bucket}/runs/r"
    for out in (local, remote):
        assert main(["run", str(config), "--out", str(out), "--only", "corpus",
                     "--no-progress"]) == 0
    assert sorted(p.name for p in local.iterdir()) == ["prompts.txt", "run.toml", "run_state.json"]
    state = json.loads((local / "run_state.json").read_text())
    assert state["stages"]["corpus"]["status"] == "done"
    assert sorted(k.rsplit("/", 1)[-1] for k in _s3_keys(s3_bucket)) == [
        "prompts.txt", "run.toml", "run_state.json"]


def test_a_refused_cache_job_creates_no_output(tmp_path, capsys, s3_bucket):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square moving left\n")
    for output in (tmp_path / "cache", f"{s3_bucket}/cache"):
        base = ["cache", "generate", "--teacher", "analytic", "--prompts", str(prompts),
                "--output", str(output)]
        for extra, expected in ((["--height", "33"], "[job] height = 33"),
                                (["--set", "job.nokey=1"], "unknown [job] key 'nokey'")):
            assert main([*base, *extra]) == 2
            _one_error(capsys, expected)
    assert not (tmp_path / "cache").exists()
    assert _s3_keys(s3_bucket) == []


def test_a_refused_training_creates_no_output(tmp_path, capsys, s3_bucket, cache):
    bad_model = ["--set", "model.dim=30", "--set", "model.heads=4"]  # no even RoPE split
    for out in (tmp_path / "kd", f"{s3_bucket}/kd"):
        assert main(["train", "kd", "--cache", cache, "--out", str(out), "--steps", "2",
                     "--quiet", *bad_model]) == 2
        _one_error(capsys, "dim must split into heads")
        assert main(["train", "kd", "--cache", cache, "--out", str(out), "--steps", "2",
                     "--quiet", "--set", "nokey=1"]) == 2
        _one_error(capsys, "unknown [train] key 'nokey'")
        assert main(["train", "ar", "--init", str(tmp_path / "none"), "--cache", cache,
                     "--out", f"{out}_ar", "--quiet", "--set", "nokey=1"]) == 2
        _one_error(capsys, "nokey")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert _s3_keys(s3_bucket) == []


@pytest.mark.slow  # a Ray runtime and a worker group (~1 min on the shared machine)
def test_workers_refusing_the_cache_leave_no_ray_train_folder(tmp_path, capsys, cache,
                                                              ray_runtime):
    out = tmp_path / "kd"
    assert main(["train", "kd", "--cache", cache, "--out", str(out), "--workers", "2",
                 "--steps", "2", "--batch-size", "2", "--set", "expect_fingerprint_digest='abc'",
                 "--set", "model.dim=16", "--set", "model.heads=2", "--quiet"]) == 2
    _one_error(capsys, "FingerprintMismatch")
    assert not out.exists()  # before: kd/ray_train/<run>/.validate_storage_marker


@pytest.mark.parametrize("present", ["nothing", "metrics", "existing"])
def test_only_a_folder_this_call_created_holding_only_ray_train_storage_goes(tmp_path, present):
    out = tmp_path / "out"
    if present == "existing":
        out.mkdir()  # the user's (empty) folder: never removed
    storage = out / "ray_train"

    def refused() -> None:
        (storage / "run").mkdir(parents=True)
        (storage / "run" / ".validate_storage_marker").write_text("")
        if present == "metrics":  # a rank that trained wrote here: kept
            (out / "metrics.jsonl").write_text('{"step": 1}\n')
        raise RuntimeError("worker refused")

    with pytest.raises(RuntimeError, match="worker refused"), \
            distributed._removed_if_refused(str(out), str(storage)):
        refused()
    assert out.exists() == (present != "nothing")
    if present == "metrics":
        assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'
