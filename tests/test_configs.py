"""Every example config in configs/ loads into its typed config, and the GPU student recipe
fits the shapes of the Wan 2.2 cache that configs/wan22_a14b.toml describes."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from student_train.config import TrainConfig
from student_train.model import StudentConfig
from student_train.self_forcing import ARConfig
from student_train.trainer import make_plan
from teacher_jobs.config import JobConfig

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))
LOADERS = {"job": JobConfig.load, "train": TrainConfig.load, "train_ar": ARConfig.load}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_loads(path):
    tables = tomllib.loads(path.read_text())
    if "corpus" in tables:  # an `s2dit run` config: every stage's section, includes resolved
        from pipeline.graph import STAGES, load_run_config
        from pipeline.graph.runner import check_config

        check_config(load_run_config(str(path)), STAGES)
        return
    assert set(tables) <= set(LOADERS), f"{path.name}: unexpected tables {set(tables) - set(LOADERS)}"
    for table in tables:
        config = LOADERS[table](str(path))
        if table == "train":
            StudentConfig(**config.model)  # the model table alone is a valid student


def test_gpu_student_recipe_fits_the_wan_cache():
    job = JobConfig.load(str(CONFIGS[0].parent / "wan22_a14b.toml"))
    kd = TrainConfig.load(str(CONFIGS[0].parent / "wan22_student_gpu.toml"))
    ar = ARConfig.load(str(CONFIGS[0].parent / "wan22_student_gpu.toml"))
    shapes = {"latent_channels": 16, "latent_frames": (job.frames - 1) // 4 + 1,
              "latent_height": job.height // 8, "latent_width": job.width // 8, "text_dim": 4096}
    student = StudentConfig(**kd.model, **shapes)
    assert student.latent_frames % student.chunk_frames == 0  # whole streaming chunks
    keep = job.keep_step_indices
    layout = SimpleNamespace(num_steps=job.steps, keep_steps=keep)
    plan = make_plan(layout, np.linspace(1.0, 0.1, len(keep)), kd.student_steps)  # stored states suffice
    assert len(plan.schedule) == kd.student_steps
    assert kd.device == ar.device == "cuda" and kd.autocast_dtype == ar.autocast_dtype == "bfloat16"
