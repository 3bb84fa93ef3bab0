"""`s2dit train kd|ar --config configs/memory.toml`: the training stages read their table through
cache_schema.config_file.load_table, so `include = "FILE"` resolves as in `s2dit run`."""

from __future__ import annotations

from pathlib import Path

import pytest

from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MEMORY = str(CONFIGS / "memory.toml")


def test_memory_toml_gives_the_included_recipes_with_its_overrides():
    kd, kd_demo = TrainConfig.load(MEMORY), TrainConfig.load(str(CONFIGS / "kd_demo.toml"))
    assert kd.steps == 1500 and kd_demo.steps == 1200  # memory.toml's override
    assert (kd.lr, kd.kd_fraction) == (kd_demo.lr, kd_demo.kd_fraction) == (5e-3, 0.5)  # included
    assert kd.model == {**kd_demo.model, "latent_frames": 15, "patch": [1, 4, 4],
                        "layout": ["lcha", "ssa:1", "ssa:1", "lcha"]}  # [train.model] merged
    ar, ar_demo = ARConfig.load(MEMORY), ARConfig.load(str(CONFIGS / "ar_demo.toml"))
    assert ar.causal_steps == 400 and ar_demo.causal_steps == 200
    assert (ar.steps, ar.lr, ar.critic_lr) == (ar_demo.steps, ar_demo.lr, ar_demo.critic_lr)
    assert TrainConfig.load(MEMORY, steps=7).steps == 7  # flags override both files


def test_a_stage_config_still_refuses_unknown_keys_and_another_stages_file(tmp_path):
    (tmp_path / "recipe.toml").write_text("[train]\nsteps = 5\nstepz = 3\n")
    (tmp_path / "top.toml").write_text("[train]\ninclude = 'recipe.toml'\n")
    with pytest.raises(ValueError, match=r"top.toml: unknown \[train\] key 'stepz' \(did you mean 'steps'\?\)"):
        TrainConfig.load(str(tmp_path / "top.toml"))
    with pytest.raises(ValueError, match=r"has no \[train_ar\] table \(it has \['train'\]\)"):
        ARConfig.load(str(tmp_path / "top.toml"))
    (tmp_path / "flat.toml").write_text("steps = 4\n")  # a file of flat keys still reads
    assert TrainConfig.load(str(tmp_path / "flat.toml")).steps == 4
