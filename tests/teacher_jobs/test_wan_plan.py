"""The A14B memory and cost plan (issue 14): real diffusers/transformers classes built on the
meta device from the configs shipped in the repository; `s2dit cache estimate` on the shipped
config fits 80 GB in bf16 with expert offload and refuses float32 without offload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from teacher_jobs.teachers.wan_plan import plan_actor, shipped_configs

ROOT = Path(__file__).resolve().parents[2]
# Published sizes (DESIGN 4.2, from the diffusers 0.42 classes and the official Wan 2.2 config).
PUBLISHED = {"transformer": 14.29e9, "transformer_2": 14.29e9, "text_encoder": 5.68e9, "vae": 127e6}
SHIPPED_SHAPE = (16, 21, 60, 104)  # 832x480, 81 frames


@pytest.fixture(scope="module")
def configs():
    return shipped_configs("t2v-a14b")


def _plan(configs, **kw):
    args = {"latent_shape": SHIPPED_SHAPE, "steps": 40, "dtype": "bfloat16", "vae_dtype": "float32",
                "offload": "expert", "micro_batch": 1, "gpu_memory_gb": 80.0}
    return plan_actor(configs, **{**args, **kw})


def test_parameter_counts_match_the_published_sizes_within_one_percent(configs):
    plan = _plan(configs)
    assert set(plan.components) == set(PUBLISHED)
    for name, published in PUBLISHED.items():
        assert plan.components[name].params == pytest.approx(published, rel=0.01), name


def test_bf16_with_expert_offload_fits_80_gb_and_float32_without_offload_is_refused(configs):
    fits = _plan(configs)
    assert fits.fits and fits.peak_gb_per_actor < 80
    # exactly one expert is resident at the peak; its weights are bf16 (2 bytes a parameter)
    resident = [k for k, c in fits.components.items() if k.startswith("transformer") and c.on_gpu_at_peak]
    assert resident == ["transformer"]
    assert fits.components["transformer"].bytes == 2 * fits.components["transformer"].params
    assert fits.components["vae"].bytes == 4 * fits.components["vae"].params
    fp32 = _plan(configs, dtype="float32", offload="none")
    assert not fp32.fits and fp32.peak_gb_per_actor > 128
    assert "--dtype bfloat16" in fp32.advice and "--offload expert" in fp32.advice
    # the transformer sees one sample per forward: a larger micro-batch adds only its latents
    latent_gb = 4 * 16 * 21 * 60 * 104 / 1e9
    assert _plan(configs, micro_batch=4).activations_gb == pytest.approx(fits.activations_gb + 3 * 8 * latent_gb)


def test_estimate_command_prints_the_plan_as_json_and_exits_2_when_it_does_not_fit():
    cmd = [sys.executable, "-m", "pipeline.cli", "cache", "estimate", "--config",
           str(ROOT / "configs/wan22_a14b.toml"), "--json"]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert ok.returncode == 0, ok.stderr
    plan = json.loads(ok.stdout)
    assert plan["fits"] is True and plan["peak_gb_per_actor"] < 80
    assert {"params", "bytes"} <= set(plan["components"]["transformer"])
    refused = subprocess.run([*cmd, "--dtype", "float32", "--offload", "none"], capture_output=True,
                             text=True, timeout=300, cwd=ROOT, check=False)
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["fits"] is False
    assert "--dtype bfloat16" in refused.stderr
