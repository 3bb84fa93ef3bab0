"""`s2dit cache estimate` sizes what the job will write: with ``causal_chunk_frames`` set, the
causal ODE pairs (a second trajectory and end state, stored like ``states`` and ``x0``) too."""

from __future__ import annotations

import json
import math

from pipeline.cli import main


def _estimate(capsys, *sets: str) -> dict:
    flags = [f for s in sets for f in ("--set", s)]
    assert main(["cache", "estimate", "--json", "--set", "teacher.steps=12", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_estimate_counts_causal_pairs_only_when_the_job_writes_them(capsys):
    plain = _estimate(capsys)
    paired = _estimate(capsys, "teacher.causal_chunk_frames=1")
    assert not plain["causal_pairs"] and paired["causal_pairs"]
    latent = math.prod(plain["latent_shape"])
    fp16 = 2  # the default half_dtype
    pairs = (plain["kept_steps"] * latent + latent) * fp16  # causal_states (S, C, F, H, W) + causal_x0
    assert pairs > 0 and paired["bytes_per_sample"] - plain["bytes_per_sample"] == pairs
