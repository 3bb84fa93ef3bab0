"""The attention backend of the Wan teacher (issue 27): the CPU-capable diffusers backends give
the default's samples (torch SDPA: ``native`` bit for bit, the others within float32 rounding),
and a backend that cannot run on the actor's device is refused with the reason before any
sample, as are hub backends (they download kernels at run time) and unknown names."""

from __future__ import annotations

import numpy as np
import pytest

from teacher_jobs.sampler import sample_latents
from teacher_jobs.teachers.wan import WanTeacher
from teacher_jobs.teachers.wan_attention import CPU_BACKENDS
from teacher_jobs.teachers.wan_settings import WanSettings

PROMPTS = ["a red cat running left", "blue ocean wave at night"]


def _x0(backend: str | None) -> np.ndarray:
    teacher = WanTeacher.tiny(attention_backend=backend, solver="euler")
    assert teacher.fingerprint()["attention_backend"] == backend  # kernels round differently
    return sample_latents(teacher, PROMPTS, [0, 1], global_seed=3, fingerprint_digest="d")


def test_cpu_backends_match_the_default_sdpa():
    default = _x0(None)
    for backend in CPU_BACKENDS:
        x0 = _x0(backend)
        if backend == "native":  # diffusers' default is native SDPA
            assert np.array_equal(x0, default)
        else:
            np.testing.assert_allclose(x0, default, rtol=1e-4, atol=1e-5, err_msg=backend)


@pytest.mark.parametrize("backend", ["_native_cudnn", "flash", "_flash_3"])
def test_a_gpu_backend_on_a_cpu_actor_is_refused_naming_the_cpu_backends(backend):
    with pytest.raises(ValueError, match=f"'{backend}' cannot run on cpu.*native"):
        WanTeacher.tiny(attention_backend=backend)


def test_hub_backends_and_unknown_names_are_refused_in_the_config():
    with pytest.raises(ValueError, match="downloads its kernel from the hub"):
        WanSettings(attention_backend="flash_hub")
    with pytest.raises(ValueError, match="not a diffusers backend.*_native_cudnn"):
        WanSettings(attention_backend="fa3")
    assert WanSettings(attention_backend="_native_cudnn").attention_backend == "_native_cudnn"
