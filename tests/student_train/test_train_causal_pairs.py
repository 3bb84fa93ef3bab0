"""Stage 2's causal phase on a cache with causal ODE pairs (issue 26, Causal Forcing): it reads
the pairs instead of the bidirectional states and takes every chunk's jumps from them, chunk 0
included; their chunk size must be the student's; a cache without them trains as before (the
weights of that path are pinned by test_train_golden.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cache_factory import make_cache

from cache_schema import CAUSAL_PAIR_FIELDS, CacheReader
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig, ARTrainer
from student_train.self_forcing.causal import collate_causal, teacher_forcing_loss
from student_train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pairs")
    return {"pairs": make_cache(root / "pairs", seeds=1, causal_chunk_frames=1),
            "plain": make_cache(root / "plain", seeds=1)}


def _kd(cache: str, out) -> str:
    trainer = Trainer(cache, str(out), TrainConfig(steps=1, batch_size=4,
                                                   model={"dim": 24, "heads": 2}))
    torch.manual_seed(1)
    for model in (trainer.model, trainer.ema):
        for p in model.parameters():
            p.data.normal_(0, 0.1)
    return trainer.checkpoint()


@pytest.fixture(scope="module")
def kd(caches, tmp_path_factory) -> str:
    return _kd(caches["pairs"], tmp_path_factory.mktemp("kd") / "run")


def _cfg(**kw) -> ARConfig:
    return ARConfig(**{"steps": 0, "causal_steps": 3, "batch_size": 4, "warmup_steps": 1,
                       "checkpoint_every": 100, "log_every": 1, "causal_lr": 1e-3,
                       "causal_jump_fraction": 1.0, **kw})


def test_the_causal_phase_learns_every_chunks_jumps_from_the_pairs(caches, kd, tmp_path):
    trainer = ARTrainer(kd, caches["pairs"], str(tmp_path / "a"), _cfg())
    assert trainer.pair_chunk == 1
    assert set(CAUSAL_PAIR_FIELDS) <= set(trainer.stream.fields)
    assert "states" not in trainer.stream.fields  # the bidirectional trajectory is not read
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["causal"] * 3
    # jump fraction 1: every chunk's row is a jump, chunk 0 included, without
    # causal_jump_first_chunk (from the bidirectional states chunk 0 would be flow matching)
    assert all(r["causal_ode_pairs"] == 1.0 and r["causal_jump_share"] == 1.0 for r in rows)
    assert all(np.isfinite(r["causal_loss"]) for r in rows)
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_the_jumps_are_the_pairs_and_not_the_cached_trajectory(caches, kd):
    records = list(CacheReader(caches["pairs"]).iter_records())[:4]
    for r in records:
        r["_epoch"] = 0
    pairs = collate_causal(records, 16, seed=0, num_chunks=5, device="cpu", pairs=True)
    plain = collate_causal(records, 16, seed=0, num_chunks=5, device="cpu")
    np.testing.assert_array_equal(pairs.states.numpy(), np.stack([r["causal_states"] for r in records]))
    np.testing.assert_array_equal(pairs.jump_x0.numpy(),
                                  np.stack([r["causal_x0"] for r in records]).astype(np.float32))
    np.testing.assert_array_equal(plain.states.numpy(), np.stack([r["states"] for r in records]))
    assert plain.jump_x0 is plain.x0 and not plain.pairs
    torch.testing.assert_close(pairs.x0, plain.x0)  # context and flow matching: the clean clips
    trainer = ARTrainer(kd, caches["pairs"], "memory://unused-out", _cfg())
    args = {"schedule": [int(k) for k in trainer.plan["schedule"]], "context_sigma": 0.0,
            "jump_fraction": 1.0, "jump_first_chunk": True, "sigma_shift": 3.0}
    with torch.no_grad():
        loss_pairs, _ = teacher_forcing_loss(trainer.model, pairs, **args)
        loss_plain, _ = teacher_forcing_loss(trainer.model, plain, **args)
    assert float(loss_pairs) != float(loss_plain)
    with pytest.raises(ValueError, match="holds no causal_states / causal_x0"):
        collate_causal([{k: v for k, v in r.items() if k not in CAUSAL_PAIR_FIELDS}
                        for r in records], 16, seed=0, num_chunks=5, device="cpu", pairs=True)


def test_pairs_of_another_chunk_size_are_refused_naming_both(caches, kd, tmp_path):
    with pytest.raises(ValueError, match=r"causal ODE pairs of 1-frame chunks.*causal_chunk_frames "
                                         r"= 1.*streams 5-frame chunks \(chunk_frames = 5\)"):
        ARTrainer(kd, caches["pairs"], str(tmp_path / "b"), _cfg(chunk_frames=5))
    # no causal phase: the pairs are not read and their chunk size does not matter
    dmd_only = ARTrainer(kd, caches["pairs"], str(tmp_path / "c"),
                         _cfg(chunk_frames=5, causal_steps=0, steps=1))
    assert dmd_only.pair_chunk == 0 and not set(CAUSAL_PAIR_FIELDS) & set(dmd_only.stream.fields)


def test_a_cache_without_pairs_reads_what_it_read(caches, tmp_path):
    trainer = ARTrainer(_kd(caches["plain"], tmp_path / "kd"), caches["plain"],
                        str(tmp_path / "d"), _cfg())
    assert trainer.pair_chunk == 0
    assert trainer.stream.fields == ("noise", "x0", "text_emb", "prompt", "states", "sigmas")


def _rows(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_use_causal_pairs_false_ignores_the_pairs(caches, kd, tmp_path):
    off = ARTrainer(kd, caches["pairs"], str(tmp_path / "off"), _cfg(use_causal_pairs=False))
    assert off.pair_chunk == 0
    assert off.stream.fields == ("noise", "x0", "text_emb", "prompt", "states", "sigmas")
    off.run(progress=False)
    # jump fraction 1 from the bidirectional states: chunk 0 is flow matching again (4 of 5 chunks jump)
    rows = _rows(tmp_path / "off")
    assert [r["phase"] for r in rows] == ["causal"] * 3
    assert all("causal_ode_pairs" not in r and r["causal_jump_share"] == pytest.approx(0.8) for r in rows)
    # pairs of another chunk size than the student's do not matter when they are not read
    ARTrainer(kd, caches["pairs"], str(tmp_path / "off5"), _cfg(use_causal_pairs=False, chunk_frames=5))


def test_with_or_without_pairs_the_draws_are_the_same(caches, kd, tmp_path):
    """No jump rows (jump fraction 0): the pairs are read or not, every other draw (records,
    sigmas, noises) is the same, so the weights are equal to the bit; with jumps they differ."""
    weights = {}
    for use, fraction in ((True, 0.0), (False, 0.0), (True, 1.0), (False, 1.0)):
        trainer = ARTrainer(kd, caches["pairs"], str(tmp_path / f"{use}{fraction}"),
                            _cfg(use_causal_pairs=use, causal_jump_fraction=fraction))
        trainer.run(progress=False)
        weights[use, fraction] = trainer.model.state_dict()
    same, differ = (weights[True, 0.0], weights[False, 0.0]), (weights[True, 1.0], weights[False, 1.0])
    assert all(torch.equal(same[0][k], same[1][k]) for k in same[0])
    assert any(not torch.equal(differ[0][k], differ[1][k]) for k in differ[0])
