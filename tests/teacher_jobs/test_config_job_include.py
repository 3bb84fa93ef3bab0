"""`s2dit cache generate --config FILE`: [job] is read through cache_schema.config_file (bounded,
`include = "FILE"` resolved as in `s2dit run`; a standalone job keeps the recipe's paths)."""

from __future__ import annotations

import pytest

from cache_schema.config_file import ConfigFileError
from teacher_jobs.config import JobConfig


def test_a_job_table_include_is_resolved_and_overridden(tmp_path):
    (tmp_path / "recipe.toml").write_text(
        "[job]\nprompts = 'p.txt'\nframes = 9\nheight = 32\n"
        "[job.teacher]\nkind = 'analytic'\nsteps = 6\n")
    (tmp_path / "top.toml").write_text(
        "[job]\ninclude = 'recipe.toml'\nheight = 48\n[job.teacher]\nsteps = 4\n")
    config = JobConfig.load(str(tmp_path / "top.toml"))
    assert (config.frames, config.height, config.teacher.steps) == (9, 48, 4)
    assert config.prompts.endswith("p.txt")  # a standalone job keeps the recipe's corpus


def test_a_job_config_that_is_no_small_toml_file_is_refused_by_name(tmp_path):
    (tmp_path / "bad.toml").write_text("frames = = 3\n")
    with pytest.raises(ConfigFileError, match=r"job config .*bad.toml is not valid TOML"):
        JobConfig.load(str(tmp_path / "bad.toml"))
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(ConfigFileError, match="is a folder"):
        JobConfig.load(str(tmp_path / "folder.toml"))
    (tmp_path / "flat.toml").write_text("frames = 5\n")  # flat keys, no [job]: still read
    assert JobConfig.load(str(tmp_path / "flat.toml")).frames == 5
