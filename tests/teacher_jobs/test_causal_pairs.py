"""Causal ODE pairs of the analytic teacher (issue 26, Causal Forcing): the autoregressive
teacher is the mixture restricted to a chunk with mode weights from the clean past, guided as the
teacher guides, solved by the teacher's own solver. Its ODE recalls the memory task's identity
from the clean past exactly and branches at 1/2 where the past does not tell; its first chunk
follows the bidirectional teacher's marginal; one chunk covering the clip is the teacher's own
trajectory bit for bit; the setting reaches the fingerprint only when set, and Wan refuses it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cache_schema import CAUSAL_CHUNK_KEY, CAUSAL_PAIR_FIELDS, fingerprint_digest, validate_record
from teacher_jobs.config import JobConfig
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import build_teacher, make_settings
from teacher_jobs.teachers.analytic import AnalyticConfig, AnalyticTeacher
from teacher_jobs.teachers.analytic_stats import binomial_p, chi_square_uniform

PER_CLASS = 128
KEEP = (0, 3, 6, 9)


def _decode(teacher: AnalyticTeacher, x: np.ndarray, classes: np.ndarray, frames: range
            ) -> tuple[np.ndarray, np.ndarray]:
    """(code, branch) per sample of its class's mode nearest on ``frames``."""
    shape, k = teacher.latent_shape, teacher.means.shape[1]
    sl = slice(frames.start, frames.stop)
    near = np.zeros(len(x), int)
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        modes = teacher.means[c].reshape(k, *shape)[:, :, sl].reshape(k, -1)
        xs = np.asarray(x[idx], np.float64)[:, :, sl].reshape(len(idx), -1)
        near[idx] = ((xs[:, None] - modes[None]) ** 2).sum(-1).argmin(1)
    return teacher.factors.code[near], teacher.factors.branch[near]


@pytest.fixture(scope="module")
def memory():
    """The memory task of configs/memory.toml (3 seen, 9 blank, seen again) on two classes
    (the unconditional mixture holds both), one-frame chunks, 256 samples."""
    config = AnalyticConfig(task="memory", latent_shape=(4, 15, 8, 8), modes_per_class=1,
                            identity_codes=3, visible_frames=3, gap_frames=9, num_steps=12,
                            objects=("square",), colours=("red", "green"), motions=("left",))
    teacher = AnalyticTeacher(config, causal_chunk_frames=1)
    prompts = [f"a {c} {o} moving {m}" for (o, c, m) in teacher.classes] * PER_CLASS
    records, rejected = record_trajectories(teacher, prompts, list(range(len(prompts))),
                                            global_seed=5, keep_steps=KEEP)
    assert not rejected
    classes = np.array([teacher.class_of(r["prompt"]) for r in records])
    x0 = np.stack([r["x0"] for r in records])
    causal = np.stack([r["causal_x0"] for r in records])
    return teacher, records, classes, x0, causal


def test_memory_task_pairs_recall_the_code_from_the_clean_past_and_branch_at_half(memory):
    teacher, records, classes, x0, causal = memory
    for r in records[:4]:
        validate_record(r, teacher.layout(KEEP))
        np.testing.assert_array_equal(r["causal_states"][0], r["noise"])  # sigma 1: the noise
    code, _ = _decode(teacher, x0, classes, range(3))  # the clean past's identity
    for t in (1, 2, 12, 13, 14):  # every later sighting, each chunk given its clean past
        got, _ = _decode(teacher, causal, classes, range(t, t + 1))
        assert (got == code).all(), (t, float((got == code).mean()))
    # frame 12: the first after the gap; its past (frames 0-11) does not tell the branch
    _, went_on = _decode(teacher, causal, classes, range(12, 13))
    assert binomial_p(int(went_on.sum()), len(went_on)) > 0.01, went_on.mean()
    assert 0.4 < went_on.mean() < 0.6
    # frames 13, 14: frame 12 of the clean past tells it, and the pairs follow
    _, past_branch = _decode(teacher, x0, classes, range(12, 13))
    for t in (13, 14):
        _, got = _decode(teacher, causal, classes, range(t, t + 1))
        assert (got == past_branch).all(), t
    # the bidirectional teacher chose frame 12 with the later frames' noise too: from the same
    # noise of frame 12 the causal branch is its own draw, not a copy of the cached one (0.68)
    assert float((went_on == past_branch).mean()) < 0.85


def test_first_chunk_pairs_follow_the_teachers_marginal(memory):
    teacher, _, classes, x0, causal = memory
    codes = teacher.factors.codes
    ours = np.bincount(_decode(teacher, causal, classes, range(1))[0], minlength=codes)
    theirs = np.bincount(_decode(teacher, x0, classes, range(1))[0], minlength=codes)
    # 1e-3, not 1e-2: the draws' last bits differ between CPUs (vectorised RNG and BLAS paths),
    # so the fixed seed is a fresh draw on another machine, and at 1e-2 each statistic fails one
    # in 100 by chance alone (session 16's machine read (108, 81, 67), p 0.006; session 15's CI
    # passed). A teacher that prefers a code fails: (128, 64, 64) reads p 1e-7, (100, 100, 56) 5e-4.
    assert chi_square_uniform(ours) > 1e-3 and chi_square_uniform(theirs) > 1e-3, (ours, theirs)
    assert stats.chi2_contingency(np.stack([ours, theirs])).pvalue > 1e-3, (ours, theirs)


def test_one_chunk_over_the_clip_is_the_teachers_trajectory_bit_for_bit():
    prompts = ["a red square moving left", "a blue ring moving right", "a green cross"] * 2
    keep = (0, 2, 4, 6)
    whole = build_teacher("analytic", num_steps=8, causal_chunk_frames=5)
    records, _ = record_trajectories(whole, prompts, list(range(6)), global_seed=0,
                                     keep_steps=keep)
    for r in records:
        np.testing.assert_array_equal(r["causal_states"], r["states"])
        np.testing.assert_array_equal(r["causal_x0"], r["x0"])
    # chunked pairs: a sample's bytes do not depend on its micro-batch
    chunked = build_teacher("analytic", num_steps=8, causal_chunk_frames=2)
    a, _ = record_trajectories(chunked, prompts, list(range(6)), global_seed=0, keep_steps=keep)
    b, _ = record_trajectories(chunked, prompts, list(range(6)), global_seed=0, keep_steps=keep,
                               micro_batch=1)
    for ra, rb in zip(a, b, strict=True):
        for name in CAUSAL_PAIR_FIELDS:
            np.testing.assert_array_equal(ra[name], rb[name])
    # without the setting the records are what they were (no pair fields)
    plain, _ = record_trajectories(build_teacher("analytic", num_steps=8), prompts,
                                   list(range(6)), global_seed=0, keep_steps=keep)
    assert not set(CAUSAL_PAIR_FIELDS) & set(plain[0])


def test_the_setting_reaches_the_fingerprint_only_when_set_and_wan_refuses_it():
    off = JobConfig(teacher={"kind": "analytic"})
    on = JobConfig(teacher={"kind": "analytic", "causal_chunk_frames": 2})
    assert "causal_chunk_frames" not in off.to_json()["teacher"]  # recorded configs as before
    assert on.to_json()["teacher"]["causal_chunk_frames"] == 2
    fp_off = off.teacher.driver_plan(off.video).fingerprint
    fp_on = on.teacher.driver_plan(on.video).fingerprint
    assert CAUSAL_CHUNK_KEY not in fp_off and fp_on[CAUSAL_CHUNK_KEY] == 2
    assert {k: v for k, v in fp_on.items() if k != CAUSAL_CHUNK_KEY} == fp_off
    full = [cache_fingerprint(fp, keep_steps=(0,), global_seed=0, half_dtype="float16",
                              negative_prompt="") for fp in (fp_off, fp_on)]
    assert fingerprint_digest(full[0]) != fingerprint_digest(full[1])  # never mixed
    # the teacher a fingerprint describes writes the same pairs
    assert AnalyticTeacher.from_fingerprint(fp_on).causal_chunk_frames == 2
    assert on.teacher.build(on.video, device="cpu").causal_chunk_frames == 2
    with pytest.raises(ValueError, match=r"\[job\] frames = 17: .* from 33 \(causal_chunk_frames = 9 "
                                         r"latent frames in one chunk\).* nearest valid value: 33"):
        JobConfig(teacher={"kind": "analytic", "causal_chunk_frames": 9})
    with pytest.raises(ValueError, match="wan teacher cannot write causal ODE pairs.*causal "
                                         "phase's own model"):
        make_settings({"kind": "wan", "causal_chunk_frames": 1})
    assert make_settings({"kind": "wan"}).to_json().get("causal_chunk_frames") is None

