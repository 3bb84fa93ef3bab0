"""The README's main command at a tiny scale: `s2dit demo` is `s2dit run` on the bundled demo
config; every stage runs, report.json is complete, and a rerun after changing only stage 2's
section reruns stage 2 and what follows it, nothing before."""

from __future__ import annotations

import io
import json
import tomllib
from pathlib import Path

from rich.console import Console

from cache_schema import CacheReader
from cache_schema.versioning import list_tags
from pipeline.graph import RunConfig, bundled_config, load_run_config
from pipeline.run_api import demo_config, run_config
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = {"train_classes": 4, "per_class": 4, "train_steps": 3, "batch_size": 8, "eval_per_class": 1, "ar_steps": 2,
        "ar_causal_steps": 2, "ar_batch_size": 4}


def _tiny_demo(out: Path, **flags) -> RunConfig:
    """The demo config at the tiny scale: `s2dit demo`'s flags, plus a narrower student (dim 32,
    the demo's layout) and 8 teacher steps (24 in the demo) to halve the test's time."""
    config = demo_config(out=str(out), **{**TINY, **flags})
    config.override("train", model={"dim": 32, "heads": 2, "layout": ["lcha", "ssa:2", "ssa:2", "lcha"]})
    config.override("job", teacher={"kind": "analytic", "steps": 8, "shift": 3.0, "guidance": [3.0, 3.0]})
    return config


def _state(out: Path) -> dict:
    return json.loads((out / "run_state.json").read_text())["stages"]


def test_the_demo_config_is_the_repository_file_and_includes_the_documented_recipes():
    """One demo config (configs/demo.toml, shipped as package data), whose training sections
    are configs/kd_demo.toml and configs/ar_demo.toml plus what demo.toml overrides."""
    assert Path(bundled_config("demo.toml")).read_bytes() == (ROOT / "configs/demo.toml").read_bytes()
    demo = load_run_config(str(ROOT / "configs/demo.toml")).resolved()
    own = tomllib.loads((ROOT / "configs/demo.toml").read_text())
    assert TrainConfig.load(None, **demo["train"]) == TrainConfig.load(
        str(ROOT / "configs/kd_demo.toml"), **{k: v for k, v in own["train"].items() if k != "include"})
    assert ARConfig.load(None, **demo["train_ar"]) == ARConfig.load(str(ROOT / "configs/ar_demo.toml"))
    assert demo_config(ar_steps=0).enabled("train_ar") is False


def test_demo_runs_every_stage_then_a_stage_2_change_reruns_only_stage_2_onwards(tmp_path, ray_runtime):
    out, printed = tmp_path / "demo", io.StringIO()
    run_config(_tiny_demo(out), console=Console(file=printed, width=200), progress=False)
    assert f"report: {out}/report.html" in printed.getvalue()  # the last thing the demo says
    stages = _state(out)
    assert [s["status"] for s in stages.values()] == ["done"] * 9 + ["skipped", "done"]
    assert "no compare section" in stages["compare"]["reason"]  # the demo compares nothing
    report = json.loads((out / "report.json").read_text())
    assert report["checkpoint"] == stages["train_kd"]["outputs"]["checkpoint"]
    assert report["cache_tag"] == "train" and (out / "report.html").stat().st_size > 0
    assert {"generate_s", "verify_s", "train_kd_s", "eval_kd_s", "train_ar_s", "train_ar_causal_s",
            "train_ar_dmd_s", "eval_ar_s", "sample_s"} <= set(report["timings"])
    assert list_tags(str(out / "cache")) == {"train": CacheReader(str(out / "cache")).generation}
    assert len(CacheReader(f"{out}/cache@train")) == 4 * 4
    for scores in report["scores"]["held_out_seeds"].values():
        assert 0.0 <= scores["adherence"] <= 1.0
    # Stage 2 starts from the stage-1 checkpoint and is scored chunk by chunk
    assert report["ar_checkpoint"].startswith(str(out / "student_ar"))
    assert report["ar_scores"]["stage"] == "ar" and report["ar_scores"]["step"] == 4  # causal + DMD
    assert "student_ar_4step_streaming" in report["ar_scores"]["held_out_seeds"]
    # the sample stage is text to video through `s2dit sample`'s code: S2DiT-AR streaming
    preview = out / "preview"
    assert (preview / "preview.png").stat().st_size > 0
    sidecar = json.loads((preview / "preview.json").read_text())
    assert sidecar["stage"] == "ar" and sidecar["streaming"] and sidecar["prompts"] == report["preview_prompts"]
    assert len(sidecar["outputs"]["videos"]) == 4 and sidecar["video"]["frames"] == 5
    assert all((preview / f"preview.{i}.mp4").stat().st_size > 0 for i in range(4))
    # the resolved config is in the run folder, with the included recipe
    resolved = tomllib.loads((out / "run.toml").read_text())
    assert resolved["train_ar"]["causal_sigma_shift"] == 3.0
    assert resolved["train"]["model"]["dim"] == 32 and resolved["job"]["teacher"]["steps"] == 8

    # change only [train_ar] (one more DMD step): stage 2 and what follows rerun, nothing before
    run_config(_tiny_demo(out, ar_steps=3), console=Console(quiet=True), progress=False)
    again = _state(out)
    rerun = [name for name in again if again[name]["finished"] != stages[name]["finished"]]
    assert rerun == ["train_ar", "eval_ar", "sample", "report"]
    assert again["train_ar"]["fingerprint"] != stages["train_ar"]["fingerprint"]
    assert all(again[n]["fingerprint"] == stages[n]["fingerprint"] for n in list(again)[:6])
    assert json.loads((out / "eval_ar.json").read_text())["step"] == 5
    assert CacheReader(str(out / "cache")).generation == stages["generate"]["outputs"]["generation"]
