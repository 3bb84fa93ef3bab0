"""The README's main command at a tiny scale: every stage runs and the report is complete."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from cache_schema import CacheReader
from cache_schema.versioning import list_tags
from pipeline.run import DEMO_AR_RECIPE, DEMO_KD_RECIPE, DemoConfig, run_demo
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig

ROOT = Path(__file__).resolve().parent.parent


def test_demo_recipes_are_the_documented_configs():
    """The demo trains with configs/kd_demo.toml and configs/ar_demo.toml (steps, batch apart)."""
    sized = {"steps": 1, "batch_size": 1, "checkpoint_every": 1}
    assert TrainConfig.load(str(ROOT / "configs/kd_demo.toml"), **sized) == TrainConfig(**DEMO_KD_RECIPE, **sized)
    assert ARConfig.load(str(ROOT / "configs/ar_demo.toml"), **sized) == ARConfig(**DEMO_AR_RECIPE, **sized)


def test_demo_runs_every_stage_end_to_end(tmp_path, ray_runtime):
    out = tmp_path / "demo"
    cfg = DemoConfig(out=str(out), per_class=8, train_steps=3, batch_size=8, eval_per_class=2,
                     ar_steps=2, ar_causal_steps=2, ar_batch_size=4)
    result = run_demo(cfg, Console(quiet=True))
    report = json.loads((out / "report.json").read_text())
    assert report["checkpoint"] == result["checkpoint"] and report["cache_tag"] == "train"
    assert set(report["timings"]) == {"generate_s", "verify_s", "train_s", "evaluate_s",
                                      "train_ar_s", "train_ar_causal_s", "train_ar_dmd_s",
                                      "evaluate_ar_s", "sample_s"}
    assert list_tags(str(out / "cache")) == {"train": CacheReader(str(out / "cache")).generation}
    assert len(CacheReader(f"{out}/cache@train")) == 12 * 8
    for scores in report["scores"]["held_out_seeds"].values():
        assert 0.0 <= scores["adherence"] <= 1.0
    # Stage 2 starts from the stage-1 checkpoint and is scored chunk by chunk.
    assert report["ar_checkpoint"].startswith(str(out / "student_ar"))
    # numbered by causal + DMD steps
    assert report["ar_scores"]["stage"] == "ar" and report["ar_scores"]["step"] == 4
    assert "student_ar_4step_streaming" in report["ar_scores"]["held_out_seeds"]
    assert (out / "preview.png").stat().st_size > 0
    # Stage 9 is text to video through `s2dit sample`'s code: S2DiT-AR streaming, one MP4 a prompt
    sidecar = json.loads((out / "preview.json").read_text())
    assert sidecar["stage"] == "ar" and sidecar["streaming"] and sidecar["prompts"] == report["preview_prompts"]
    assert len(sidecar["outputs"]["videos"]) == 4 and sidecar["video"]["frames"] == 5
    assert all((out / f"preview.{i}.mp4").stat().st_size > 0 for i in range(4))
