"""The shipped run configs: the tiny diffusers Wan teacher through the whole graph (slow), the
cluster config's stages and keys resolve (fast), and the demo runs from an installed wheel
without the repository's files (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import imageio.v3 as iio
import pytest
from rich.console import Console

from pipeline.graph import STAGES, load_run_config
from pipeline.graph.runner import check_config
from pipeline.graph.stages.generate import job_config
from pipeline.run_api import run_config
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig
from teacher_jobs.config import JobConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_wan_config_runs_the_whole_graph_to_mp4(tmp_path, ray_runtime):
    out = tmp_path / "wan"
    state = run_config(load_run_config(str(ROOT / "configs/tiny_wan.toml")), out=str(out),
                       console=Console(quiet=True), progress=False).stages
    status = {name: record["status"] for name, record in state.items()}
    assert status == {**{n: "done" for n in state}, "eval_kd": "skipped", "eval_ar": "skipped"}
    assert "analytic teacher" in state["eval_kd"]["reason"] and "'wan'" in state["eval_kd"]["reason"]
    assert state["generate"]["outputs"]["teacher"] == "wan"
    sidecar = json.loads((out / "preview" / "preview.json").read_text())
    assert sidecar["stage"] == "ar" and sidecar["streaming"]
    for url in sidecar["outputs"]["videos"]:
        with fsspec.open(url, "rb") as handle:
            assert iio.imread(handle.read(), plugin="FFMPEG", extension=".mp4").shape == (9, 32, 32, 3)
    assert (out / "report.html").stat().st_size > 0
    print({name: record.get("seconds") for name, record in state.items()})  # -s: stage timings


def test_cluster_run_config_resolves_every_stage_to_the_documented_recipes():
    config = load_run_config(str(ROOT / "configs/wan22_a14b_run.toml"))
    check_config(config, STAGES)  # every enabled section parses into its stage's typed config
    job = job_config(config, "RUN/prompts.jsonl", "RUN/cache")
    standalone = JobConfig.load(str(ROOT / "configs/wan22_a14b.toml"), prompts="RUN/prompts.jsonl",
                                output="RUN/cache", ray_address="auto")
    assert job == standalone and job.teacher.kind == "wan" and job.num_gpus_per_actor == 1.0
    gpu = str(ROOT / "configs/wan22_student_gpu.toml")
    assert TrainConfig.load(None, **config.section("train")) == TrainConfig.load(gpu, seed=0)
    assert ARConfig.load(None, **config.section("train_ar")) == ARConfig.load(gpu, seed=0)
    assert config.section("corpus")["kind"] == "file" and config.run["train_workers"] == 8
    assert config.section("sample")["device"] == "cuda"


def test_tiny_wan_config_resolves():
    config = load_run_config(str(ROOT / "configs/tiny_wan.toml"))
    check_config(config, STAGES)
    assert job_config(config, "p.txt", "cache").teacher.source == "tiny-random"


def _tracked_tree(dest: Path) -> Path:
    """The working tree's tracked files (symlinks kept), without .git, .venv or runs."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True,
                           ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src, dst = ROOT / rel, dest / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    return dest


@pytest.mark.slow
def test_demo_runs_from_an_installed_wheel_without_the_repository(tmp_path):
    src = _tracked_tree(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                    str(src)], check=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("s2dit-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   timeout=600)
    shutil.rmtree(src)  # nothing of the checkout is left to read
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    probe = "import pipeline.graph as g; print(g.bundled_config('demo.toml'))"
    where = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site)), where
    out = tmp_path / "demo"
    subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--out", str(out), "--train-classes",
                    "2", "--per-class", "4", "--train-steps", "2", "--batch-size", "4",
                    "--eval-per-class", "1", "--ar-steps", "1", "--ar-causal-steps", "1",
                    "--ar-batch-size", "2", "--num-actors", "1", "--no-progress"],
                   cwd=tmp_path, env=env, check=True, timeout=1200, capture_output=True)
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["train"]["lr"] == 5e-3  # kd_demo.toml's, read from the wheel
    assert report["config"]["train_ar"]["causal_sigma_shift"] == 3.0  # ar_demo.toml's
    assert all(s["status"] == "done" for s in report["stages"].values())
    assert (out / "report.html").stat().st_size > 0
