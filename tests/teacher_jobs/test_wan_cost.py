"""The per-GPU cost model of the A14B teacher (issue 27): `s2dit cache estimate --gpu` on the
shipped config against the official Wan 2.2 timings (teachers/wan_cost.py cites them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from teacher_jobs.gpus import GPUS
from teacher_jobs.teachers.wan_cost import PUBLISHED, estimate, official_flops, rates

ROOT = Path(__file__).resolve().parents[2]


def _estimate(capsys, *flags: str) -> dict:
    args = build_parser().parse_args(["cache", "estimate", "--config",
                                      str(ROOT / "configs/wan22_a14b.toml"), "--json", *flags])
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out)


def test_estimate_on_the_shipped_config_is_within_10_percent_of_the_published_times(capsys):
    """The shipped config is the official 480P recipe (832x480, 81 frames, 40 steps)."""
    for gpu in ("a100-80g", "h100"):
        cost = _estimate(capsys, "--gpu", gpu)["cost"]
        published = PUBLISHED[(gpu, "t2v-a14b", "480P")]
        assert cost["seconds_per_sample"] == pytest.approx(published, rel=0.10), gpu
        assert cost["basis"].startswith("calibrated")
    measured = _estimate(capsys, "--throughput", "700")["cost"]
    assert measured["seconds_per_sample"] == 700 and measured["gpu"] == "a100-80g"  # the config's
    assert measured["gpu_hours_per_10k"] == pytest.approx(10_000 * 700 / 3600, abs=0.1)


def test_the_held_out_i2v_times_agree_and_the_fitted_rates_are_physical():
    """Rates solved from the T2V rows predict the I2V rows (same backbone, measured apart) within
    5%; the attention rate sits below the bf16 peak and above the token-linear rate (which folds
    in element-wise work, swaps, text encoder and VAE)."""
    for (gpu, task, size), published in PUBLISHED.items():
        seconds = estimate(*official_flops(size), gpu).seconds_per_sample
        assert seconds == pytest.approx(published, rel=0.05 if task == "i2v-a14b" else 1e-6)
    for gpu in GPUS:
        r = rates(gpu)
        assert r.linear_tflops < r.attention_tflops <= 0.8 * GPUS[gpu].peak_bf16_tflops, gpu
    # faster GPUs cost less a sample; an unknown type is refused naming the known ones
    a100, h100, b200 = (estimate(*official_flops("480P"), g).seconds_per_sample
                        for g in ("a100-80g", "h100", "b200"))
    assert a100 > h100 > b200
    with pytest.raises(ValueError, match="a100-80g"):
        rates("v100")
