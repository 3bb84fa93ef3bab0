"""Conditioning dropout in both stages' regression rows and classifier-free guidance at student
sampling (issue 26): the dropped rows see the cache's unconditional embedding (and KD rows learn
the teacher's v_uncond), the checkpoint records it, guidance is refused without it, and the
guided sampler, whole and streaming, is v_u + g (v_c - v_u) of the same network."""

from __future__ import annotations

import pytest
import torch
from cache_factory import make_cache

from student_train.config import TrainConfig
from student_train.guidance import Guided
from student_train.losses import distillation_loss
from student_train.sampler import sample, sample_streaming
from student_train.self_forcing import ARConfig, ARTrainer
from student_train.self_forcing.causal import collate_causal, teacher_forcing_loss
from student_train.student import StudentCheckpoint
from student_train.trainer import Trainer, collate

pytestmark = pytest.mark.usefixtures("one_thread")
MODEL = {"dim": 24, "heads": 2}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return make_cache(tmp_path_factory.mktemp("dropout") / "cache", seeds=1)


def _trainer(cache, out, **kw) -> Trainer:
    return Trainer(cache, str(out), TrainConfig(steps=1, batch_size=8, model=MODEL, **kw))


class _Recorder(torch.nn.Module):
    """Returns zeros and keeps what it was given."""

    def forward(self, x, sigma, d, text, mask, causal=False):
        self.seen = (x, sigma, d, text, mask)
        return torch.zeros_like(x)


def _records(trainer: Trainer, n: int = 8) -> list[dict]:
    return trainer.take_records()(n)


def test_dropped_kd_rows_see_the_null_text_and_learn_v_uncond(cache, tmp_path):
    trainer = _trainer(cache, tmp_path / "a", cond_dropout=0.5)
    records = _records(trainer)
    batch = collate(records, trainer.layout.max_text_len, "cpu", 0, null_text=True)
    drop = batch.u[:, 4] < 0.5
    assert 0 < int(drop.sum()) < len(records)  # this seed drops some rows, keeps others
    model, plan = _Recorder(), trainer.plan
    kw = {"schedule": plan.schedule, "adjacent": plan.adjacent, "contiguous": plan.contiguous,
          "kd_weight": 1.0, "step_weight": 0.0, "jitter": True}
    loss, _ = distillation_loss(model, batch, cond_dropout=0.5, **kw)
    x, sigma, _d, text, mask = model.seen
    n = len(records)  # KD rows first, then the step rows (kd_fraction 1)
    assert torch.equal(text[:n][drop], batch.null_text[drop])
    assert torch.equal(text[:n][~drop], batch.text[~drop]) and torch.equal(text[n:], batch.text)
    assert torch.equal(mask[:n][drop], batch.null_mask[drop])
    # the teacher's v_uncond at the stored state (no jitter): the zero model's loss is its energy
    b, s = batch.sigmas.shape
    i = (batch.u[:, 0] * s).long().clamp(max=s - 1)
    v_u = batch.v_uncond[torch.arange(b), i].float()
    assert torch.equal(sigma[:n][drop], batch.sigmas[torch.arange(b), i][drop])
    assert torch.equal(x[:n][drop], batch.states[torch.arange(b), i].float()[drop])
    kept, _ = distillation_loss(model, batch, **kw)  # no dropout: the guided targets
    assert loss.item() != kept.item()
    rows = torch.cat([v_u[drop], torch.zeros_like(v_u[~drop])])
    assert (rows.pow(2).sum() / v_u.numel()).item() <= loss.item()


def test_no_dropout_leaves_batch_and_loss_as_they_were(cache, tmp_path):
    trainer = _trainer(cache, tmp_path / "b")
    records = _records(trainer)
    plain = collate(records, trainer.layout.max_text_len, "cpu", 0)
    assert plain.null_text is None and plain.u.shape[1] == 5
    plan, model = trainer.plan, trainer.model
    kw = {"schedule": plan.schedule, "adjacent": plan.adjacent, "contiguous": plan.contiguous,
          "kd_weight": 1.0, "step_weight": 1.0, "jitter": True}
    torch.testing.assert_close(distillation_loss(model, plain, cond_dropout=0.0, **kw)[0],
                               distillation_loss(model, plain, **kw)[0], rtol=0, atol=0)


def test_checkpoint_records_dropout_and_guidance_is_refused_without_it(cache, tmp_path):
    with_drop = _trainer(cache, tmp_path / "c", cond_dropout=0.2)
    with_drop.run(progress=False)
    student = StudentCheckpoint.load(str(tmp_path / "c"))
    assert student.state["config"]["cond_dropout"] == 0.2 and student.cond_dropout == 0.2
    student.check_guidance(2.0)  # trained with dropout: allowed
    plain = _trainer(cache, tmp_path / "d")
    plain.run(progress=False)
    old = StudentCheckpoint.load(str(tmp_path / "d"))
    del old.state["config"]["cond_dropout"]  # a checkpoint from before the setting
    noise = torch.randn(1, 4, 5, 8, 8)
    text, mask = torch.randn(1, 3, 32), torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="cond_dropout = 0"):
        old.sample(noise, text, mask, [1.0, 0.5, 0.0], guidance=2.0, null=(text[0], mask[0]))
    old.sample(noise, text, mask, [1.0, 0.5, 0.0], guidance=1.0)  # off: always allowed


def _model_and_inputs(cache, tmp_path):
    model = _trainer(cache, tmp_path / "m").model.eval()
    torch.manual_seed(1)
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(3, 4, 5, 8, 8, generator=g)
    text, mask = torch.randn(3, 4, 32, generator=g), torch.ones(3, 4, dtype=torch.bool)
    null = (torch.randn(1, 32, generator=g), torch.ones(1, dtype=torch.bool))
    return model, noise, text, mask, null


@pytest.mark.parametrize("streaming", [False, True])
def test_guided_sampling_is_v_u_plus_g_times_the_difference(cache, tmp_path, streaming):
    model, noise, text, mask, null = _model_and_inputs(cache, tmp_path)
    sigmas = [1.0, 0.6, 0.0]
    run = ((lambda **kw: sample_streaming(model, noise, text, mask, sigmas, 1, **kw)) if streaming
           else (lambda **kw: sample(model, noise, text, mask, sigmas, **kw)))
    plain = run()
    assert torch.equal(run(guidance=1.0, null=null), plain)  # off: the unguided sampler itself
    # null = the prompt's own text: v_u = v_c, so any guidance gives the unguided samples
    torch.testing.assert_close(run(guidance=3.0, null=(text, mask)), plain, rtol=1e-4, atol=1e-5)
    guided = run(guidance=3.0, null=null)
    assert (guided - plain).abs().max() > 1e-3
    # one step by hand: g = 3 from the two unguided velocities
    if not streaming:
        sig, d = torch.ones(3), torch.full((3,), 0.4)
        v_c = model(noise, sig, d, text, mask)
        v_u = model(noise, sig, d, null[0].expand(3, 1, 32), null[1].expand(3, 1))
        v = Guided(model, 3.0, null)(noise, sig, d, text, mask)
        torch.testing.assert_close(v, v_u + 3.0 * (v_c - v_u), rtol=1e-4, atol=1e-5)


def test_causal_phase_drops_whole_clips_to_flow_matching(cache, tmp_path):
    kd = _trainer(cache, tmp_path / "kd", cond_dropout=0.5)
    kd.run(progress=False)
    ar = ARTrainer(str(tmp_path / "kd"), cache, str(tmp_path / "ar"),
                   ARConfig(causal_steps=1, steps=0, batch_size=8, cond_dropout=0.5))
    records = ar.take_records()(8)
    common = {"seed": 0, "num_chunks": ar.num_chunks, "device": "cpu"}
    plain = collate_causal(records, ar.layout.max_text_len, **common)
    batch = collate_causal(records, ar.layout.max_text_len, cond_dropout=0.5, **common)
    assert plain.drop is None and torch.equal(plain.eps, batch.eps) and torch.equal(plain.u, batch.u)
    assert 0 < int(batch.drop.sum()) < 8
    text, _ = batch.conditioning()
    assert torch.equal(text[batch.drop], batch.null_text[batch.drop])
    kw = {"schedule": [int(k) for k in ar.plan["schedule"]], "context_sigma": 0.0,
          "jump_fraction": 1.0, "jump_first_chunk": True, "sigma_shift": 3.0}
    _, parts = teacher_forcing_loss(ar.model, batch, **kw)
    _, plain_parts = teacher_forcing_loss(ar.model, plain, **kw)
    assert plain_parts["causal_jump_share"] == 1.0  # every row jumps without dropout
    assert parts["causal_jump_share"] == pytest.approx(1.0 - batch.drop.float().mean().item())
    ar.run(progress=False)
    student = StudentCheckpoint.load(str(tmp_path / "ar"))
    assert student.cond_dropout == 0.5 and student.state["init"]["cond_dropout"] == 0.5
    # stage 2 without a causal phase: the unconditional mode is the KD model's
    student.state["config"]["causal_steps"] = 0
    assert student.cond_dropout == 0.5
    student.state["init"].pop("cond_dropout")
    with pytest.raises(ValueError, match="cond_dropout = 0"):
        student.check_guidance(1.5)


def test_guided_text_is_the_same_tensors_while_the_inputs_are(cache, tmp_path):
    """Every pass of a guided stream gets the same doubled text tensors (the model's per-stream
    reuse matches an input off CPU by identity only), rebuilt when the text changes: another
    tensor, or the same one modified in place; inference tensors are rebuilt every call."""
    model, _, text, mask, null = _model_and_inputs(cache, tmp_path)
    wrapper = Guided(model, 3.0, null)
    first = wrapper._text(text, mask)
    assert all(a is b for a, b in zip(wrapper._text(text, mask), first, strict=True))
    other = text.clone()
    assert wrapper._text(other, mask)[0] is not first[0]
    assert torch.equal(wrapper._text(other, mask)[0], first[0])  # same values, rebuilt
    kept = wrapper._text(other, mask)
    other.add_(1.0)  # in place: the version moves, the doubled text follows
    changed = wrapper._text(other, mask)
    assert changed[0] is not kept[0] and torch.equal(changed[0][: len(text)], other)
    with torch.inference_mode():
        frozen = text.clone()
        assert wrapper._text(frozen, mask)[0] is not wrapper._text(frozen, mask)[0]
