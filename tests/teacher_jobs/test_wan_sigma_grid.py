"""The official Wan sigma grid as a named setting (issue 27): ``sigma_grid = "official"`` gives
Wan's own FlowUniPCMultistepScheduler grid (linspace(0.999, 0) shifted, integer timesteps);
the default "diffusers" stays WanPipeline's grid, so the stock-pipeline parity test
(test_teacher_wan.py::test_recorded_loop_equals_stock_wan_pipeline) and existing fingerprints
are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from teacher_jobs.teachers.wan import WanTeacher
from teacher_jobs.teachers.wan_settings import WanSettings


def _official(steps: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """wan/utils/fm_solvers_unipc.py, written out: sigma_max 0.999 and sigma_min 0 from the
    init's linspace(1, 1/1000, 1000) at shift 1, then set_timesteps(steps, shift=shift)."""
    grid = np.linspace(0.999, 0.0, steps + 1)[:-1]
    shifted = shift * grid / (1 + (shift - 1) * grid)
    return np.concatenate([shifted, [0.0]]).astype(np.float32), (shifted * 1000).astype(np.int64)


@pytest.mark.parametrize("solver", ["unipc", "euler"])
def test_the_official_grid_is_wans_own_and_the_default_is_wanpipelines(solver):
    steps, shift = 40, 12.0
    official = WanTeacher.tiny(solver=solver, num_steps=steps, shift=shift, sigma_grid="official")
    sigmas, timesteps = _official(steps, shift)
    np.testing.assert_allclose(official.sigmas(), sigmas, rtol=0, atol=1e-6)
    assert np.array_equal(official.timesteps(), timesteps.astype(np.float32))
    official.reset_solver()  # the recorder resets per micro-batch: the grid survives it
    assert np.array_equal(official.scheduler.timesteps.cpu().numpy(), timesteps)
    default = WanTeacher.tiny(solver=solver, num_steps=steps, shift=shift)
    assert default.sigma_grid == "diffusers"
    assert abs(default.sigmas()[-2] - official.sigmas()[-2]) > 1e-3  # 0.242 vs 0.235 (unipc)
    assert "sigma_grid" not in default.fingerprint()  # old caches keep their fingerprint
    assert official.fingerprint()["sigma_grid"] == "official"


def test_official_grid_samples_end_clean_and_the_setting_is_checked():
    from teacher_jobs.sampler import sample_latents

    teacher = WanTeacher.tiny(sigma_grid="official", solver="unipc")
    x0 = sample_latents(teacher, ["a red cat"], [0], global_seed=0, fingerprint_digest="d")
    assert np.isfinite(x0).all() and np.abs(x0).sum() > 0
    assert WanSettings(sigma_grid="official").sigma_grid == "official"
    with pytest.raises(ValueError, match="sigma_grid"):
        WanSettings(sigma_grid="wan")
    with pytest.raises(ValueError, match="sigma_grid"):
        WanTeacher.tiny(sigma_grid="wan")
