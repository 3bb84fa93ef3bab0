"""Bidirectional 4-step DMD (issue 26's reference point, configs/compare.toml bidirectional_dmd):
stage 2 with ``[train_ar] chunk_frames`` = the clip's latent frames and no causal phase. One
chunk of the whole clip: the rollout is the bidirectional few-step sampler (no causal mask),
and the trainer runs DMD on it and writes a checkpoint that streams whole-clip chunks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cache_factory import make_cache
from model_factory import random_model
from test_train_ar import SIGMAS, _inputs, _kd_checkpoint

from student_train.sampler import sample
from student_train.self_forcing import ARConfig, ARTrainer, rollout

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("layout", [None, ("lcha", "ssa:1", "conv", "lcha")])
def test_one_chunk_of_the_whole_clip_is_the_bidirectional_sampler(layout):
    noise, text, mask = _inputs()  # 5 latent frames
    kw = {"layout": layout} if layout else {}
    whole = random_model(chunk_frames=5, **kw)
    with torch.no_grad():
        rolled = rollout(whole, noise, text, mask, SIGMAS, [len(SIGMAS) - 2], grad=False)
        bidirectional = sample(whole, noise, text, mask, SIGMAS, causal=False)
        per_frame = rollout(random_model(chunk_frames=1, **kw), noise, text, mask, SIGMAS,
                            [len(SIGMAS) - 2] * 5, grad=False)
    torch.testing.assert_close(rolled, bidirectional, rtol=1e-4, atol=1e-5)
    # chunks of one frame are block-causal: the same weights sample something else
    assert not torch.allclose(per_frame, bidirectional, atol=1e-3)


def test_the_trainer_runs_dmd_on_the_whole_clip_without_a_causal_phase(tmp_path):
    cache = make_cache(tmp_path / "cache", seeds=1)
    kd = _kd_checkpoint(cache, tmp_path / "kd")
    config = ARConfig(steps=1, causal_steps=0, chunk_frames=5, batch_size=2, critic_steps=1,
                      warmup_steps=1, checkpoint_every_s=0)
    trainer = ARTrainer(kd, cache, str(tmp_path / "ar"), config)
    assert trainer.num_chunks == 1 and trainer.model_config.chunk_frames == 5
    trainer.run(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "ar" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows if "phase" in r] == ["dmd"] and "dmd_loss" in rows[-1]
    state = json.loads((Path(trainer.out_url) / "checkpoints" / "step_000001" / "state.json").read_text())
    assert state["stage"] == "ar" and state["model_config"]["chunk_frames"] == 5
