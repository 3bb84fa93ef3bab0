"""Stages run as Ray tasks (issue 27; pipeline/graph/remote.py): ``[sample] ray = {...}`` runs a
tiny run's sample stage in a task on the local Ray runtime, which writes the bytes the
in-process stage wrote; an error inside the task is the usual one ``error:`` line; a ``ray``
table where no stage can take one, a typo in it and resources no node has are refused; the
cluster config sends sample and report to GPU workers."""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path

import fsspec
import pytest
from rich.console import Console

from pipeline.cli import main
from pipeline.graph import RunConfigError, load_run_config, run_graph
from pipeline.graph.runner import check_config
from pipeline.graph.stage import Stage, StageContext
from pipeline.graph.state import STATE_FILE
from pipeline.run_api import run_config

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]
QUIET = Console(quiet=True)

CONFIG = """
[run]
seed = 0
[corpus]
kind = "analytic"
train_classes = 3
[job]
seeds_per_prompt = 2
samples_per_shard = 8
num_actors = 1
[job.teacher]
kind = "analytic"
steps = 8
[train]
steps = 2
batch_size = 2
warmup_steps = 1
checkpoint_every = 2
log_every = 1
model = {dim = 16, heads = 2}
[eval]
enabled = false
[train_ar]
steps = 1
causal_steps = 1
batch_size = 2
[sample]
count = 2
[report]
enabled = false
"""
TIMINGS = ("seconds", "first_chunk_s", "chunk_s")  # wall-clock times: differ between any two runs


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _without_timings(sidecar: bytes) -> dict:
    return {k: v for k, v in json.loads(sidecar).items() if k not in TIMINGS}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, ray_runtime) -> tuple[Path, Path]:
    """(config, run folder) of a finished tiny analytic run, sample stage in process."""
    folder = tmp_path_factory.mktemp("remote")
    config = folder / "run.toml"
    config.write_text(CONFIG)
    run_config(load_run_config(str(config)), out=str(folder / "run"), console=QUIET, progress=False)
    return config, folder / "run"


def test_the_sample_stage_in_a_ray_task_writes_the_in_process_bytes(tiny_run):
    config, run = tiny_run
    before, state = _files(run / "preview"), json.loads((run / STATE_FILE).read_text())["stages"]
    assert {"preview.json", "preview.npy", "preview.0.mp4", "preview.1.mp4", "preview.png"} <= set(before)
    printed = Console(file=io.StringIO(), width=200)
    remote = load_run_config(str(config), ["sample.ray.num_cpus=1", "sample.ray.memory_gb=0.5"])
    after = run_graph(remote, _real_stages(), str(run), only="sample", console=printed,
                      progress=False).get("sample")
    text = printed.file.getvalue()
    assert "sample: in a Ray task (1 CPU, 0 GPU, 0.5 GB)" in text
    assert "2 prompts -> " in text  # the task's own lines reach the driver
    files = _files(run / "preview")
    assert set(files) == set(before)
    for name in before:  # byte for byte, but the sidecar's wall-clock times
        if name.endswith(".json"):
            assert _without_timings(files[name]) == _without_timings(before[name])
        else:
            assert files[name] == before[name], name
    assert after["outputs"] == state["sample"]["outputs"]
    assert after["fingerprint"] == state["sample"]["fingerprint"]  # where it runs is not what
    assert "ray" not in after["inputs"]["section"]
    # run.toml records the table; the stage never sees it
    assert remote.resolved()["sample"]["ray"] == {"num_cpus": 1, "memory_gb": 0.5}
    assert "ray" not in load_run_config(str(config)).resolved()["sample"]
    assert "ray" not in remote.section("sample")


def _real_stages():
    from pipeline.graph import STAGES

    return tuple(STAGES)


def test_an_error_inside_the_task_is_one_error_line(tiny_run, capsys):
    config, run = tiny_run
    code = main(["run", str(config), "--out", str(run), "--only", "sample", "--no-progress",
                 "--set", "sample.ray.num_cpus=1", "--set", "sample.steps=0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == ["error: steps must be >= 1, got 0"]
    record = json.loads((run / STATE_FILE).read_text())["stages"]["sample"]
    assert record["status"] == "failed" and record["error"] == "ValueError: steps must be >= 1, got 0"


def _toy() -> tuple[Stage, ...]:
    def run(ctx: StageContext) -> dict:
        ctx.console.print("toy: written")
        with fsspec.open(ctx.path("toy.json"), "w") as handle:
            json.dump({"pid": os.getpid(), "source": ctx.config.section("sample").get("teacher_source")}, handle)
        return {"file": ctx.path("toy.json")}

    def broken(ctx: StageContext) -> dict:
        raise FileNotFoundError(f"no such prompt file under {ctx.run_dir}")

    return (Stage(name="toy", title="toy", section="sample", run=run, writes=("toy.json",),
                  ray_task=True, paths=("teacher_source",), check=lambda config: None),
            Stage(name="broken", title="broken", section="report", run=broken, ray_task=True))


def test_a_toy_stage_runs_in_another_process_with_absolute_paths(tmp_path, monkeypatch, ray_runtime):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.toml").write_text("[corpus]\nkind = 'inline'\n[sample]\nteacher_source = 'w/x'\n"
                                       "ray = {num_cpus = 1}\n[report]\nenabled = false\n")
    state = run_graph(load_run_config("cfg.toml"), _toy(), str(tmp_path / "run"),
                      console=QUIET)
    written = json.loads((tmp_path / "run" / "toy.json").read_text())
    assert written == {"pid": written["pid"], "source": str(tmp_path / "w/x")}
    assert written["pid"] != os.getpid()
    assert state.get("toy")["outputs"] == {"file": str(tmp_path / "run" / "toy.json")}


def test_ray_tables_are_refused_where_no_task_can_take_them(tmp_path):
    def config(text: str):
        (tmp_path / "c.toml").write_text("[corpus]\nkind = 'analytic'\n" + text)
        check_config(load_run_config(str(tmp_path / "c.toml")), _real_stages())

    with pytest.raises(RunConfigError, match=r"\[tag\] ray: stage tag runs in the driver.*\[sample\]"):
        config("[tag]\nray = {num_gpus = 1}\n")
    with pytest.raises(RunConfigError, match="num_gpu.*num_gpus"):
        config("[sample.ray]\nnum_gpu = 1\n")
    with pytest.raises(RunConfigError, match=r"\[sample.ray\] memory_gb must be a number >= 0"):
        config("[sample.ray]\nmemory_gb = -1\n")
    with pytest.raises(RunConfigError, match="must be a table"):
        config("[sample]\nray = 1\n")


def test_resources_no_node_has_are_refused_at_once(tmp_path, ray_runtime):
    (tmp_path / "cfg.toml").write_text("[corpus]\nkind = 'inline'\n[sample.ray]\nnum_gpus = 64\n"
                                       "[report]\nenabled = false\n")
    with pytest.raises(ValueError, match=r"\[sample\] ray asks for 1 CPU, 64 GPU, but no node"):
        run_graph(load_run_config(str(tmp_path / "cfg.toml")), _toy(), str(tmp_path / "run"),
                  console=QUIET)


def test_an_error_in_a_toy_task_is_raised_as_itself(tmp_path, ray_runtime):
    (tmp_path / "cfg.toml").write_text("[corpus]\nkind = 'inline'\n[sample]\nenabled = false\n"
                                       "[report.ray]\nnum_cpus = 1\n")
    with pytest.raises(FileNotFoundError, match="no such prompt file") as caught:
        run_graph(load_run_config(str(tmp_path / "cfg.toml")), _toy(), str(tmp_path / "run"),
                  console=QUIET)
    assert type(caught.value) is FileNotFoundError  # not Ray's wrapper: one line at the CLI


def test_the_cluster_config_sends_sample_and_report_to_gpu_workers():
    config = load_run_config(str(ROOT / "configs/wan22_a14b_run.toml"))
    check_config(config, _real_stages())
    sample, report = config.placement("sample"), config.placement("report")
    assert sample is not None and sample.num_gpus == 1 and sample.memory_gb > 16
    assert report is not None and report.memory_gb > 16 and report.num_cpus >= 1
    assert "ray" not in config.section("sample") and config.placement("train") is None
    assert config.placement("job") is None


def test_a_task_reaches_object_storage_through_the_profile_by_name(ray_runtime, s3_bucket, s3_server,
                                                                   tmp_path, monkeypatch):
    """The endpoint is in the profile alone (AWS_ENDPOINT_URL points at a closed port): the task
    writes the run folder's file on S3 through the profile the driver names."""
    import s3fs

    from cache_schema.store import PROFILES_ENV, use_profile

    name = f"moto-{uuid.uuid4().hex[:8]}"
    (tmp_path / "storage.toml").write_text(f'[profiles.{name}]\n'
                                           f'client_kwargs = {{ endpoint_url = "{s3_server}" }}\n')
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path / "storage.toml"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens
    s3fs.S3FileSystem.clear_instance_cache()
    (tmp_path / "cfg.toml").write_text("[corpus]\nkind = 'inline'\n[sample.ray]\nnum_cpus = 1\n"
                                       "[report]\nenabled = false\n")
    with use_profile(name):
        state = run_graph(load_run_config(str(tmp_path / "cfg.toml")), _toy(), f"{s3_bucket}/run",
                          console=QUIET)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    written = json.loads(fs.cat_file(f"{s3_bucket.removeprefix('s3://')}/run/toy.json"))
    assert written["pid"] != os.getpid()
    assert state.get("toy")["outputs"] == {"file": f"{s3_bucket}/run/toy.json"}
