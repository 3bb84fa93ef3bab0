"""The teacher-forced streaming row (issue 24): frames 0..N-1 are the teacher's full-step
reference sample from the same noise, committed as context as finished chunks are, and the
student streams the rest. It tells exposure bias (the student's own past leads it astray)
from a bias of its conditional (wrong even given the true past).

A real tiny memory-task cache (seen 1 frame, gap 2, 5 frames: "auto" = frame 3), a KD
checkpoint and an S2DiT-AR one trained from it that commits chunks at context sigma 0.2.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest
import torch

from cache_schema import flow
from pipeline import eval as ev
from pipeline.eval import ROLES, evaluate_checkpoint, format_report, teacher_forced_frames
from pipeline.graph import load_run_config
from pipeline.report.quality import chunk_curves, quality_table
from student_train.config import TrainConfig
from student_train.sampler import context_noise_like, sample_streaming
from student_train.self_forcing import ARConfig, ARTrainer
from student_train.student import StudentCheckpoint
from student_train.trainer import Trainer
from teacher_jobs.teachers.analytic import AnalyticConfig, AnalyticTeacher

sys.path.insert(0, str(Path(__file__).parents[1] / "student_train"))
from cache_factory import make_cache
from model_factory import random_model

pytestmark = pytest.mark.usefixtures("one_thread")
FRAMES = 5
TASK = {"task": "memory", "visible_frames": 1, "gap_frames": 2}
EVAL = {"per_class": 1, "reference_cache": "off"}
MEMORY_RUN = str(Path(__file__).parents[2] / "configs" / "memory.toml")


@pytest.fixture(scope="module")
def memory(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("forced")
    cache = make_cache(root / "cache", seeds=1, **TASK)
    trainer = Trainer(cache, str(root / "kd"), TrainConfig(steps=1, batch_size=4,
                                                           model={"dim": 24, "heads": 2}))
    torch.manual_seed(1)
    for model in (trainer.model, trainer.ema):  # adaLN-zero would make a fresh model v = 0
        for p in model.parameters():
            p.data.normal_(0, 0.1)
    kd = trainer.checkpoint()
    ar = ARTrainer(kd, cache, str(root / "ar"), ARConfig(
        steps=1, batch_size=4, warmup_steps=1, checkpoint_every=1, log_every=1, critic_steps=1,
        lr=1e-3, critic_lr=1e-3, context_sigma=0.2)).run(progress=False)
    return {"kd": kd, "ar": ar}


def _rows(checkpoint: str, **kw) -> dict:
    return json.loads(json.dumps(evaluate_checkpoint(checkpoint, **EVAL, **kw)))


def test_forcing_no_frames_is_the_plain_streaming_row_to_the_bit(memory):
    assert StudentCheckpoint.load(memory["ar"]).context_sigma == 0.2  # context noise is drawn
    report = _rows(memory["ar"], teacher_forced=0)
    rows = report["held_out_seeds"]
    forced = dict(rows["student_ar_4step_streaming_forced0"])
    assert forced.pop("role") == "diagnostic" and forced.pop("teacher_forced_frames") == 0
    plain = dict(rows["student_ar_4step_streaming"])
    assert plain.pop("role") == "student"
    assert forced == plain
    assert "(diagnostic, not in the verdict)" in format_report(report)


def test_the_forced_frames_are_the_references_and_the_last_chunk_the_students(memory, monkeypatch):
    """N = clip length - chunk: what the row scores is the reference's frames 0..N-1 exactly,
    then the student's own chunk from the same noise, given that past at its context sigma."""
    n = FRAMES - 1
    scored, sampled = {}, {}
    real_row, real_sample = ev._gated_row, StudentCheckpoint.sample

    def row(teacher, x0, prompts, role, reference_key, reference, chunk_frames):
        if role == "diagnostic":
            scored.update(x0=x0, ref_x0=reference[0], reference_key=reference_key)
        return real_row(teacher, x0, prompts, role, reference_key, reference, chunk_frames)

    def sample(self, noise, text, mask, sigmas, **kw):
        if kw.get("forced") is not None:
            sampled.update(student=self, noise=noise, text=text, mask=mask, sigmas=sigmas)
        return real_sample(self, noise, text, mask, sigmas, **kw)

    monkeypatch.setattr(ev, "_gated_row", row)
    monkeypatch.setattr(StudentCheckpoint, "sample", sample)
    rows = _rows(memory["ar"], teacher_forced=n)["held_out_seeds"]
    assert rows[f"student_ar_4step_streaming_forced{n}"]["gate"]["against"] == "teacher_fullstep"
    x0, ref = torch.from_numpy(scored["x0"]), torch.from_numpy(scored["ref_x0"])
    assert scored["reference_key"] == "teacher_fullstep" and x0.shape[2] == FRAMES
    assert torch.equal(x0[:, :, :n], ref[:, :, :n])
    assert not torch.allclose(x0[:, :, n:], ref[:, :, n:], atol=1e-3)  # not the teacher's
    # the student's last chunk, by hand: the reference committed at 0.2, then 4 Euler steps
    model, noise, text, mask = (sampled[k] for k in ("student", "noise", "text", "mask"))
    model, b = model.model, noise.shape[0]
    state, ctx = model.init_stream_state(b, dtype=noise.dtype), context_noise_like(noise)
    for t in range(n):
        state = model.commit_chunk(ref[:, :, t : t + 1], text, mask, state, sigma=0.2,
                                   noise=ctx[:, :, t : t + 1])
    x = noise[:, :, n:]
    with torch.no_grad():
        for s, s_next in itertools.pairwise(sampled["sigmas"]):
            v, _ = model.forward_chunk(x, torch.full((b,), s), torch.full((b,), s - s_next), text,
                                       mask, state)
            x = flow.euler_step(x, s, s_next, v)
    assert torch.equal(x0[:, :, n:], x)


def test_a_kd_checkpoint_streamed_gets_the_row_auto_after_the_gap(memory):
    report = _rows(memory["kd"], streaming=True, teacher_forced="auto")
    rows = report["held_out_seeds"]
    key = "student_4step_streaming_forced3"  # visible 1 + gap 2
    assert set(rows) == {"teacher_fullstep", "teacher_4step", "teacher_4step_unipc", "student_4step",
                         "student_fullstep_grid", "student_4step_streaming", key}
    assert set(rows[key]) == set(rows["student_4step_streaming"]) | {"teacher_forced_frames"}
    assert rows[key]["role"] == "diagnostic" and rows[key]["teacher_forced_frames"] == 3
    assert {"recall", "branch_rate", "per_chunk", "paired_fidelity", "gate"} <= set(rows[key])
    assert all(s["role"] in ROLES for s in rows.values())
    line = next(ln for ln in format_report(report).splitlines() if ln.split()[0] == key)
    assert "gate" in line and "diagnostic: frames 0-2 the reference's" in line
    # the HTML report and its chunk curves leave the row out of the table and do not break
    table = quality_table(report, None)
    assert "forced3" not in table and "diagnostic" not in table and "<td>S2DiT-KD</td>" in table
    assert "forced3" in chunk_curves(report)


def test_the_errors(memory, capsys):
    teacher = AnalyticTeacher(AnalyticConfig(latent_shape=(4, 6, 8, 8), **TASK))
    assert teacher_forced_frames("auto", teacher, 3, True) == 3
    assert teacher_forced_frames(None, teacher, 1, False) is None
    for value, chunk, streaming, says in (
            (2, 1, False, "needs a streaming row"),
            (3, 2, True, "whole chunks of 2 frames"),
            ("auto", 2, True, "whole chunks of 2 frames"),
            (6, 1, True, "fewer than the clip's 6"),
            (-1, 1, True, "fewer than the clip's 6"),
            (True, 1, True, "a number of latent frames or 'auto'"),
            ("3", 1, True, "a number of latent frames or 'auto'")):
        with pytest.raises(ValueError, match=says):
            teacher_forced_frames(value, teacher, chunk, streaming)
    with pytest.raises(ValueError, match="'motion' task has no gap"):
        teacher_forced_frames("auto", AnalyticTeacher(AnalyticConfig()), 1, True)
    with pytest.raises(ValueError, match="needs a streaming row"):  # before any sampling
        evaluate_checkpoint(memory["kd"], teacher_forced=2, **EVAL)
    kd, noise = StudentCheckpoint.load(memory["kd"]), torch.zeros(1, 4, FRAMES, 8, 8)
    with pytest.raises(ValueError, match="forced frames need streaming"):
        kd.sample(noise, torch.zeros(1, 6, 32), torch.ones(1, 6, dtype=torch.bool), [1.0, 0.0],
                  streaming=False, forced=noise[:, :, :1])
    from pipeline.cli import main

    assert main(["eval", "--checkpoint", memory["ar"], "--teacher-forced", str(FRAMES)]) != 0
    assert f"fewer than the clip's {FRAMES}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="teacher_forced must be a number of latent frames"):
        load_run_config(MEMORY_RUN, overrides=['eval.teacher_forced="all"'])
    config = load_run_config(MEMORY_RUN, overrides=['eval.teacher_forced="auto"'])
    assert config.section("eval")["teacher_forced"] == "auto"


def test_the_sampler_takes_a_forced_prefix_that_fits():
    model = random_model(chunk_frames=1)
    g = torch.Generator().manual_seed(0)
    noise, text = torch.randn(2, 4, 4, 8, 8, generator=g), torch.randn(2, 6, 32, generator=g)
    mask, sigmas = torch.ones(2, 6, dtype=torch.bool), [1.0, 0.75, 0.5, 0.0]
    forced = torch.randn(2, 4, 2, 8, 8, generator=g)
    out = sample_streaming(model, noise, text, mask, sigmas, forced=forced)
    assert torch.equal(out[:, :, :2], forced)
    # at context sigma 0 the forced frames' own noise plays no part: only what they are
    other = noise.clone()
    other[:, :, :2] = torch.randn(2, 4, 2, 8, 8, generator=g)
    assert torch.equal(sample_streaming(model, other, text, mask, sigmas, forced=forced), out)
    assert torch.equal(sample_streaming(model, noise, text, mask, sigmas, forced=forced[:, :, :0]),
                       sample_streaming(model, noise, text, mask, sigmas))
    for bad, says in ((forced[:1], "do not fit the noise"), (noise, "fewer than the clip's 4"),
                      (forced[:, :, :1], "whole chunks of 2")):
        with pytest.raises(ValueError, match=says):
            sample_streaming(model, noise, text, mask, sigmas, chunk_frames=2 if bad.shape[2] == 1 else None,
                             forced=bad)
    with pytest.raises(ValueError, match="context_sigma=None"):
        sample_streaming(model, noise, text, mask, sigmas, context_sigma=None, forced=forced)


def test_streaming_only_keeps_every_streaming_row_to_the_bit_and_drops_the_whole_clip_ones(memory, capsys):
    full = _rows(memory["ar"], lengths=(1, 2))
    only = _rows(memory["ar"], lengths=(1, 2), whole_clip=False)
    for name, rows in full.items():
        if not isinstance(rows, dict) or "student_ar_4step_streaming" not in rows:
            continue
        assert {"student_4step", "student_fullstep_grid"} <= set(rows)
        assert set(only[name]) == set(rows) - {"student_4step", "student_fullstep_grid"}
        for key in only[name]:
            assert only[name][key] == rows[key], (name, key)
    with pytest.raises(ValueError, match="leaves nothing to score.*--streaming"):
        evaluate_checkpoint(memory["kd"], whole_clip=False, **EVAL)
    from pipeline.cli import main

    assert main(["eval", "--checkpoint", memory["kd"], "--streaming", "--streaming-only",
                 "--reference-cache", "off", "--per-class", "1"]) == 0
    assert "student_4step_streaming" in capsys.readouterr().out
