"""Stage 2's causal phase (teacher forcing on the cache), the context noise of committed chunks,
the shifted DMD noise draw, and the phase-aware checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cache_factory import make_cache
from model_factory import random_model

from student_train.config import TrainConfig
from student_train.sampler import context_noise_like, sample_streaming
from student_train.self_forcing import ARConfig, ARTrainer
from student_train.self_forcing.batch import draw_sigma
from student_train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
SIGMAS = [1.0, 0.9, 0.75, 0.5, 0.0]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return make_cache(tmp_path_factory.mktemp("causal") / "cache", seeds=2)


@pytest.fixture(scope="module")
def kd(cache, tmp_path_factory) -> str:
    trainer = Trainer(cache, str(tmp_path_factory.mktemp("kd") / "run"),
                      TrainConfig(steps=1, batch_size=4, model={"dim": 24, "heads": 2}))
    torch.manual_seed(1)
    for model in (trainer.model, trainer.ema):
        for p in model.parameters():
            p.data.normal_(0, 0.1)
    return trainer.checkpoint()


def _inputs(batch=3, frames=5):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, 4, frames, 8, 8, generator=g), torch.randn(batch, 6, 32, generator=g),
            torch.ones(batch, 6, dtype=torch.bool))


def test_a_context_committed_at_sigma_is_noised_with_its_own_noise():
    model = random_model()
    noise, text, mask = _inputs()
    chunk = noise[:, :, :1] * 0.1
    state = model.init_stream_state(3)
    with pytest.raises(ValueError, match="needs the context noise"):
        model.commit_chunk(chunk, text, mask, state, sigma=0.5)
    eps = torch.randn_like(chunk)
    noised = model.commit_chunk(chunk, text, mask, state, sigma=0.5, noise=eps)
    by_hand = model.forward_chunk(0.5 * chunk + 0.5 * eps, torch.full((3,), 0.5), torch.zeros(3),
                                  text, mask, state)[1]  # x_sigma of DESIGN 4.1 as the input
    labelled_only = model.forward_chunk(chunk, torch.full((3,), 0.5), torch.zeros(3), text, mask,
                                        state)[1]  # the old bug: label 0.5, clean input
    for a, b, c in zip(noised.flatten()[0], by_hand.flatten()[0], labelled_only.flatten()[0]):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, c) for a, c in zip(noised.flatten()[0][1:],
                                                        labelled_only.flatten()[0][1:]))
    # streaming sampling: per-row keyed context noise (a row's bytes do not depend on its batch)
    out = sample_streaming(model, noise, text, mask, SIGMAS, context_sigma=0.1)
    alone = sample_streaming(model, noise[1:2], text[1:2], mask[1:2], SIGMAS, context_sigma=0.1)
    torch.testing.assert_close(out[1:2], alone)
    torch.testing.assert_close(context_noise_like(noise)[1:2], context_noise_like(noise[1:2]))
    assert not torch.allclose(out, sample_streaming(model, noise, text, mask, SIGMAS))


def test_shifted_draw_is_self_forcings_and_uniform_is_unchanged():
    u = torch.linspace(0, 0.999, 1000)
    torch.testing.assert_close(draw_sigma(u, (0.02, 0.98), 1.0), 0.02 + u * 0.96)
    s = draw_sigma(u, (0.02, 0.98), 5.0)
    torch.testing.assert_close(s, (5 * u / (1 + 4 * u)).clamp(0.02, 0.98))
    assert 0.8 < float(s.median()) < 0.86  # most draws at high noise


def _cfg(**kw) -> ARConfig:
    return ARConfig(**{"steps": 2, "causal_steps": 3, "batch_size": 4, "warmup_steps": 1,
                       "checkpoint_every": 2, "log_every": 1, "critic_steps": 1, "lr": 1e-3,
                       "critic_lr": 1e-3, "causal_lr": 1e-3, "causal_jump_fraction": 0.5,
                       "dmd_sigma_shift": 5.0, **kw})


def test_causal_phase_then_dmd_resumes_exactly_and_names_its_stage(cache, kd, tmp_path):
    whole = ARTrainer(kd, cache, str(tmp_path / "a"), _cfg())
    whole.run(progress=False)
    killed = ARTrainer(kd, cache, str(tmp_path / "b"), _cfg())
    killed.run(progress=False, stop_after=3)  # checkpoints at 2 (causal) and 3 (end of causal)
    resumed = ARTrainer(kd, cache, str(tmp_path / "b"), _cfg())
    assert (resumed.causal_step, resumed.step) == (3, 0)
    resumed.run(progress=False)
    for name in ("model", "ema", "critic"):
        sa, sb = getattr(whole, name).state_dict(), getattr(resumed, name).state_dict()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6)
    ckpts = Path(whole.out_url) / "checkpoints"
    stages = {p.name: json.loads((p / "state.json").read_text())["stage"]
              for p in sorted(ckpts.glob("step_*"))}
    assert stages == {"step_000002": "causal", "step_000003": "causal", "step_000004": "ar",
                      "step_000005": "ar"}
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["causal"] * 3 + ["dmd"] * 2
    assert {"causal_loss", "causal_first_chunk_loss", "causal_jump_share"} <= set(rows[0])
    assert all(0.0 <= r["causal_jump_share"] <= 1.0 for r in rows[:3])


def test_teacher_forcing_lowers_the_causal_loss(cache, kd, tmp_path):
    trainer = ARTrainer(kd, cache, str(tmp_path / "c"),
                        _cfg(causal_steps=30, steps=0, causal_lr=3e-3, checkpoint_every=100))
    trainer.run(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0]["causal_loss"], sum(r["causal_loss"] for r in rows[-5:]) / 5
    assert last < 0.7 * first
