"""The memory task and the oracle's new score (issue 24, DESIGN 4.3): degenerate students that
pass the legacy gate fail the new one, the memory task's velocity is exact, the task is
procedural in length, it needs memory (an exact sampler with a bounded reach is at chance), and
the statistics behind the verdicts are right."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from teacher_jobs.sampler import sample_latents
from teacher_jobs.teachers.analytic import AnalyticConfig, AnalyticTeacher
from teacher_jobs.teachers.analytic_reference import degenerate_student, stream_oracle
from teacher_jobs.teachers.analytic_score import reference_stats_of
from teacher_jobs.teachers.analytic_stats import binomial_p, chi_square_uniform, tv_floor, wilson

PER_CLASS = 48
REACH = 8  # latent frames the sanity students see (conv reach, SSA window): less than the gap


def memory_config(**over) -> AnalyticConfig:
    """The task of configs/memory.toml: 15 latent frames (seen 0-2, gap 3-11, seen 12-14),
    one start position, 3 identity codes x 2 branches = 6 modes per class."""
    base = {"task": "memory", "latent_shape": (4, 15, 8, 8), "modes_per_class": 1,
            "identity_codes": 3, "visible_frames": 3, "gap_frames": 9}
    return AnalyticConfig(**{**base, **over})


def _prompts(teacher: AnalyticTeacher, per_class: int) -> list[str]:
    """Every class, ``per_class`` times; sample i has class i % classes."""
    return [f"a {c} {o} moving {m}" for (o, c, m) in teacher.classes] * per_class


def _classes(teacher: AnalyticTeacher, prompts: list[str]) -> np.ndarray:
    return np.array([teacher.class_of(p) for p in prompts])


TEACHERS = {"memory": lambda: AnalyticTeacher(memory_config()), "motion": lambda: AnalyticTeacher()}


@pytest.fixture(scope="module")
def oracle():
    """Per task: the teacher and the reference stats of its own full-step samples (its
    configured 24 Euler steps, 8 per class, every class): what relative gate bounds use."""
    cache = {}

    def get(task: str):
        if task not in cache:
            teacher = TEACHERS[task]()
            ref_prompts = _prompts(teacher, 8)
            x = sample_latents(teacher, ref_prompts, list(range(len(ref_prompts))), global_seed=11)
            cache[task] = teacher, reference_stats_of(teacher.score(x, ref_prompts))
        return cache[task]

    return get


# -- 1. degenerate students pass the legacy gate and fail the new one -------------------------
@pytest.mark.parametrize("task", ["memory", "motion"])
@pytest.mark.parametrize("kind,check", [("scaled", "amplitude_bias"), ("ghost", "ghost_energy"),
                                        ("skewed", "mode_tv")])
def test_degenerate_students_pass_the_legacy_gate_and_fail_the_new_one(oracle, task, kind, check):
    teacher, ref = oracle(task)
    prompts = _prompts(teacher, PER_CLASS)
    s = teacher.score(degenerate_student(teacher, prompts, kind), prompts, reference_stats=ref)
    assert s["legacy_gate"], (kind, s["adherence"], s["coverage"], s["dispersion_ratio"])
    assert not s["gate"]["passed"]
    assert check in s["gate"]["failed"], s["gate"]["failed"]
    assert {"adherence", "coverage"}.isdisjoint(s["gate"]["failed"])  # what the legacy gate saw
    if kind == "scaled":  # r alone cannot see shrinkage: the dispersion check passes
        assert "dispersion" not in s["gate"]["failed"]
        assert s["amplitude_bias"] == pytest.approx(-0.4, abs=1e-6)
    if kind == "ghost":
        assert s["ghost_energy"] == pytest.approx(0.09, rel=1e-6)
    if kind == "skewed":
        assert s["mode_tv"] > 0.3 and s["mode_chi2_p"] < 1e-6


@pytest.mark.parametrize("task", ["memory", "motion"])
def test_exact_draws_from_the_data_pass_the_new_gate(oracle, task):
    teacher, ref = oracle(task)
    prompts = _prompts(teacher, PER_CLASS)
    s = teacher.score(teacher.sample_true_data(prompts, seed=5), prompts, reference_stats=ref)
    assert s["gate"]["passed"], s["gate"]["checks"]
    assert s["legacy_gate"]
    assert s["dispersion_ratio"] == pytest.approx(1.0, abs=0.03)
    assert abs(s["amplitude_bias"]) < 0.01 and s["ghost_energy"] < 0.005
    if task == "memory":
        assert s["recall"] == 1.0 and s["recall_chance"] == pytest.approx(1 / 3)
        lo, hi = s["branch_rate_ci"]
        assert lo <= 0.5 <= hi


# -- 2. the memory task's exact velocity ----------------------------------------------------
# -- 2. the exact velocity: test_teacher_analytic.test_exact_velocity_matches_monte_carlo[memory]


# -- 3. procedural in length ----------------------------------------------------------------
def _channel_vector(frame: np.ndarray) -> np.ndarray:
    """The one channel vector of a visible frame (C, H, W): every lit pixel carries it."""
    lit = np.abs(frame).sum(0) > 0
    cols = frame[:, lit]
    assert lit.any() and np.allclose(cols, cols[:, :1]), "a visible frame has one channel vector"
    return cols[:, 0]


def test_memory_task_is_procedural_in_length():
    base = AnalyticTeacher(memory_config())
    c, f, h, w = base.latent_shape
    period = base.period
    factors = base.factors
    k = base.means.shape[1]
    for mult in (1, 2, 4):
        t = base.at_length(f * mult) if mult > 1 else base
        frames = f * mult
        assert t.latent_shape == (c, frames, h, w) and t.means.shape[1] == k
        for name in ("start", "code", "branch"):
            np.testing.assert_array_equal(getattr(t.factors, name), getattr(factors, name))
        modes = t.means.reshape(len(t.classes), k, c, frames, h, w)
        np.testing.assert_array_equal(modes[:, :, :, :f], base.means.reshape(len(t.classes), k, c, f, h, w))
        visible = np.array([t_ % period.length < period.visible for t_ in range(frames)])
        phases = period.phases(frames)
        assert len(phases) == -(-frames // period.length)
        assert not modes[:, :, :, ~visible].any(), "blank frames are zero in every mode"
        assert modes[:, :, :, visible].any(axis=(2, 4, 5)).all(), "visible frames show the object"
        norms = np.linalg.norm(t.means, axis=2)
        np.testing.assert_allclose(norms, norms[:, :1] * np.ones((1, k)), rtol=1e-12)
        for ci in range(len(t.classes)):
            tints = {}
            for m in range(k):
                vecs = [_channel_vector(modes[ci, m, :, tt]) for tt in np.flatnonzero(visible)]
                np.testing.assert_allclose(vecs, np.broadcast_to(vecs[0], np.shape(vecs)), atol=1e-12)
                tints.setdefault(int(factors.code[m]), []).append(vecs[0])
            for same in tints.values():  # one tint per code, whatever the branch
                np.testing.assert_allclose(same, np.broadcast_to(same[0], np.shape(same)), atol=1e-12)
            firsts = [v[0] for v in tints.values()]
            assert all(not np.allclose(a, b) for i, a in enumerate(firsts) for b in firsts[i + 1:])
            for on in np.flatnonzero(factors.branch == 1):
                back = np.flatnonzero((factors.branch == 0) & (factors.code == factors.code[on])
                                      & (factors.start == factors.start[on]))
                assert len(back) == 1
                a, b = modes[ci, on], modes[ci, back[0]]
                np.testing.assert_array_equal(a[:, : phases[1].start], b[:, : phases[1].start])
                for ph in phases[1:]:
                    sl = slice(ph.start, ph.stop)
                    assert not np.array_equal(a[:, sl], b[:, sl]), (mult, ci, on, ph)


# -- 4. memory is needed -------------------------------------------------------------------
def test_memory_is_needed_a_bounded_reach_oracle_is_at_chance(oracle):
    """If an exact sampler that sees only the last REACH frames recalled the identity, the
    task would not test memory and the sanity students could pass it: it must be at chance,
    while the same sampler with the whole past recalls it and keeps the bounce at 1/2."""
    teacher, ref = oracle("memory")
    assert teacher.config.gap_frames > REACH
    prompts = _prompts(teacher, PER_CLASS)
    chance = 1 / teacher.config.identity_codes
    local = teacher.score(stream_oracle(teacher, prompts, reach=REACH, seed=1), prompts,
                          reference_stats=ref)
    assert local["recall_chance"] == pytest.approx(chance)
    assert abs(local["recall"] - chance) <= 0.1, local["recall"]
    assert not local["gate"]["passed"] and "recall" in local["gate"]["failed"]
    assert local["adherence"] == 1.0  # everything but the memory is right
    full = teacher.score(stream_oracle(teacher, prompts, reach=None, seed=1), prompts,
                         reference_stats=ref)
    assert full["recall"] >= 0.95
    lo, hi = full["branch_rate_ci"]
    assert lo <= 0.5 <= hi, full["branch_rate"]
    assert full["gate"]["passed"], full["gate"]["checks"]
    # the gap is what defeats the local sampler: one frame more of reach than the gap sees the
    # last visible frame before it, and recalls
    few = _prompts(teacher, 16)
    reaching = teacher.score(stream_oracle(teacher, few, reach=teacher.config.gap_frames + 1, seed=2), few)
    assert reaching["recall"] >= 0.95


# -- 5. statistics ------------------------------------------------------------------------
def test_wilson_intervals_against_known_values():
    z2 = stats.norm.ppf(0.975) ** 2
    np.testing.assert_allclose(wilson(0, 10), [0.0, z2 / (10 + z2)], atol=1e-12)  # 0.2775
    np.testing.assert_allclose(wilson(5, 10), [0.236593090512564, 0.763406909487436], atol=1e-9)
    np.testing.assert_allclose(wilson(100, 100), [100 / (100 + z2), 1.0], atol=1e-12)  # 0.9630
    for hits, n in ((0, 10), (5, 10), (100, 100), (7, 96), (91, 96)):
        ci = stats.binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
        np.testing.assert_allclose(wilson(hits, n), [ci.low, ci.high], atol=1e-9)
    assert wilson(0, 0) == [0.0, 1.0]


def test_chi_square_and_binomial_p_values():
    counts = np.array([30, 10, 20])  # statistic (100 + 100 + 0) / 20 = 10 on 2 dof: p = e^-5
    assert chi_square_uniform(counts) == pytest.approx(np.exp(-5), rel=1e-9)
    assert chi_square_uniform(counts) == pytest.approx(stats.chisquare(counts).pvalue, rel=1e-12)
    other = np.array([12, 9, 17, 8, 14, 12])
    stat = ((other - other.mean()) ** 2 / other.mean()).sum()
    assert chi_square_uniform(other) == pytest.approx(stats.chi2.sf(stat, len(other) - 1), rel=1e-9)
    assert chi_square_uniform(np.array([5])) == 1.0
    assert binomial_p(5, 10) == pytest.approx(1.0)
    assert binomial_p(0, 10) == pytest.approx(2 * 0.5**10)


def test_tv_floor_shrinks_with_n():
    floors = [tv_floor(n, 3) for n in (10, 100, 1000, 10000)]
    assert all(a > b for a, b in itertools.pairwise(floors))
    # large n: E|p_hat - p| ~ sqrt(2 p (1 - p) / (pi n)) per cell, TV half their sum
    approx = 0.5 * 3 * np.sqrt(2 * (1 / 3) * (2 / 3) / (np.pi * 10000))
    assert floors[-1] == pytest.approx(approx, rel=0.1)
    assert floors[0] / floors[2] == pytest.approx(10, rel=0.25)
    assert tv_floor(50, 1) == 0.0 and tv_floor(0, 3) == 0.0


# -- 6. per-chunk curves ------------------------------------------------------------------
@pytest.mark.parametrize("chunk_frames", [1, 4, 5])
def test_per_chunk_curves_have_one_entry_per_chunk_and_no_recall_in_gaps(chunk_frames):
    base = AnalyticTeacher(memory_config())
    period = base.period
    for mult in (1, 4):
        t = base.at_length(base.latent_shape[1] * mult)
        frames = t.latent_shape[1]
        prompts = _prompts(t, 2)
        s = t.score(t.sample_true_data(prompts, seed=mult), prompts, chunk_frames=chunk_frames)
        curves = s["per_chunk"]
        chunks = -(-frames // chunk_frames)
        assert curves["chunk_frames"] == chunk_frames
        assert len(curves["dispersion"]) == len(curves["amplitude"]) == len(curves["recall"]) == chunks
        for i, recall in enumerate(curves["recall"]):
            seen = any(f % period.length < period.visible
                       for f in range(i * chunk_frames, min((i + 1) * chunk_frames, frames)))
            if seen:
                assert recall == 1.0, (mult, i)  # data keep their code
                assert curves["amplitude"][i] == pytest.approx(1.0, abs=0.05)
            else:
                assert recall is None, (mult, i)
                assert curves["amplitude"][i] is None
            assert curves["dispersion"][i] == pytest.approx(1.0, abs=0.15)


# -- contrast: how far a sample moved from its class's shared part towards its own mode --------
@pytest.mark.parametrize("task", ["memory", "motion"])
def test_contrast_reads_alpha_of_a_partial_move_and_one_for_the_data(oracle, task):
    """A sample at m + alpha (mu_n - m) (m: its class's mean mode) reads contrast alpha exactly,
    whatever its amplitude bias and ghost energy read; the data read about 1; the reference's
    contrast is carried beside the student's."""
    teacher, ref = oracle(task)
    prompts = _prompts(teacher, PER_CLASS)
    classes = _classes(teacher, prompts)
    k = teacher.means.shape[1]
    own = np.arange(len(prompts)) % k
    modes = teacher.means[classes, own]  # (n, D)
    shared = teacher.means[classes].mean(1)  # (n, D)
    for alpha in (1.0, 0.5):
        s = teacher.score(shared + alpha * (modes - shared), prompts, reference_stats=ref)
        assert s["contrast"] == pytest.approx(alpha, abs=1e-9)
        assert s["reference"]["contrast"] == ref["contrast"]
        curve = s["per_chunk"]["contrast"]  # alpha in every chunk where the modes differ
        assert [c for c in curve if c is not None] == pytest.approx([alpha] * sum(c is not None for c in curve))
        if task == "memory":  # the gap: the modes are blank alike, no contrast to read
            assert [c is None for c in curve] == [a is None for a in s["per_chunk"]["amplitude"]]
            assert curve.count(None) == 9
    if task == "memory":  # the modes share most energy: half the contrast reads shrunk and ghosted
        assert s["amplitude_bias"] < -0.2 and s["ghost_energy"] > 0.05
    rng = np.random.default_rng(0)
    data = modes + teacher.config.s * rng.standard_normal(modes.shape)
    assert teacher.score(data, prompts)["contrast"] == pytest.approx(1.0, abs=0.05)
    assert 0.9 < ref["contrast"] < 1.05  # the teacher's own full-step samples keep it
