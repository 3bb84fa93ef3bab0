"""The analytic teacher: exact velocity, the oracle's two-sided verdicts, recording, rng."""

from __future__ import annotations

import numpy as np
import pytest

from cache_schema import CacheReader, CacheWriter, fingerprint_digest, flow, validate_record
from teacher_jobs.sampler import cache_fingerprint, record_trajectories, sample_latents
from teacher_jobs.teachers import build_teacher
from teacher_jobs.teachers.analytic import AnalyticConfig, AnalyticTeacher


def _prompts(teacher, per_class):
    return [f"a {c} {o} moving {m}" for (o, c, m) in teacher.classes] * per_class


TASKS = {  # (config, the mode the noisy point comes from)
    "motion": (AnalyticConfig(latent_shape=(2, 2, 4, 4)), 1),
    # 13 frames: seen 0-2, gap 3-11, seen 12; 2 starts x 3 codes x 2 branches = 12 modes
    "memory": (AnalyticConfig(task="memory", latent_shape=(4, 13, 4, 4), modes_per_class=2), 3),
}


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("sigma", [0.95, 0.6, 0.3, 0.05])
def test_exact_velocity_matches_monte_carlo(sigma, task):
    config, mode = TASKS[task]
    teacher = AnalyticTeacher(config)
    rng = np.random.default_rng(0)
    s, a = teacher.config.s, 1 - sigma
    modes = teacher.means[teacher.class_of("a red square moving left")]  # (K, Dim)
    x0_true = modes[mode] + s * rng.standard_normal(modes.shape[1])
    x = a * x0_true + sigma * rng.standard_normal(modes.shape[1])
    exact = teacher.exact_velocity(x[None], sigma, modes[None])[0]
    n = 20000
    if sigma >= 0.8:  # prior proposal, self-normalised importance weights
        k = rng.integers(0, len(modes), n)
        x0 = modes[k] + s * rng.standard_normal((n, modes.shape[1]))
        logw = -((x - a * x0) ** 2).sum(1) / (2 * sigma**2)
    else:  # posterior-based proposal: the per-mode Gaussian posterior, mixed by its evidence
        prec = 1 / s**2 + a**2 / sigma**2
        means = (modes / s**2 + a * x / sigma**2) / prec
        tau2 = a * a * s * s + sigma * sigma
        logits = (a * modes @ x - 0.5 * a * a * (modes**2).sum(1)) / tau2
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        k = rng.choice(len(modes), n, p=probs)
        x0 = means[k] + rng.standard_normal((n, modes.shape[1])) / np.sqrt(prec)
        logw = np.zeros(n)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    eps = (x - a * x0) / sigma
    mc = (w[:, None] * (eps - x0)).sum(0)
    err = np.abs(mc - exact).max()
    assert err < 0.05 * (1 + np.abs(exact).max()), (sigma, err)


def test_oracle_tells_good_from_bad_in_both_directions():
    prompts = _prompts(AnalyticTeacher(), 24)  # 24 per class: every mode gets hit
    seeds = list(range(len(prompts)))
    scores = {}
    for steps in (1, 4, 50):
        teacher = AnalyticTeacher(AnalyticConfig(num_steps=steps))
        x0 = sample_latents(teacher, prompts, seeds, global_seed=1)
        scores[steps] = teacher.score(x0, prompts)
    good = scores[50]
    assert good["adherence"] >= 0.98 and good["coverage"] >= 0.95
    assert 0.6 <= good["dispersion_ratio"] <= 1.2
    one = scores[1]
    assert one["coverage"] < 0.8 or one["dispersion_ratio"] > 1.5 or one["adherence"] < 0.9
    assert scores[4]["dispersion_ratio"] < 0.5 * good["dispersion_ratio"]  # few-step collapse
    assert scores[4]["nll_per_dim"] < good["nll_per_dim"]  # why NLL alone misleads
    true = AnalyticTeacher().sample_true_data(prompts)
    assert abs(AnalyticTeacher().score(true, prompts)["dispersion_ratio"] - 1) < 0.05


def test_any_prompt_maps_to_a_class_deterministically():
    teacher = AnalyticTeacher()
    assert teacher.class_of("a green ring moving right") == teacher.class_index[("ring", "green", "right")]
    assert teacher.class_of("quantum pelican symphony") == teacher.class_of("quantum pelican symphony")
    assert teacher.class_of("blue") == teacher.class_of("blue")


def test_recorded_trajectories_are_valid_and_rebuild_the_next_state():
    teacher = build_teacher("analytic", num_steps=8)
    prompts = _prompts(teacher, 1)[:5]
    records, rejected = record_trajectories(teacher, prompts, range(5), global_seed=3,
                                            keep_steps=range(8), negative_prompt="")
    assert not rejected
    layout = teacher.layout(tuple(range(8)))
    for rec in records:
        validate_record(rec, layout)
        states = rec["states"].astype(np.float32)
        v = flow.classifier_free_guidance(rec["v_uncond"].astype(np.float32),
                                          rec["v_cond"].astype(np.float32), rec["guidance"][:, None, None, None, None])
        sig = teacher.sigmas()
        for i in range(7):
            nxt = flow.euler_step(states[i], sig[i], sig[i + 1], v[i])
            np.testing.assert_allclose(nxt, states[i + 1], atol=2e-2)
        last = flow.euler_step(states[7], sig[7], 0.0, v[7])
        np.testing.assert_allclose(last, rec["x0"].astype(np.float32), atol=2e-2)
        np.testing.assert_array_equal(rec["states"][0], rec["noise"])
    assert list(records[0]["expert"]) == [teacher.expert_at(i) for i in range(8)]
    assert records[0]["expert"][0] == 0 and records[0]["expert"][-1] == 1


def test_same_sample_same_bytes_on_any_batch_size(tmp_path):
    teacher = build_teacher("analytic", num_steps=6)
    prompts = _prompts(teacher, 1)[:6]
    together, _ = record_trajectories(teacher, prompts, range(6), global_seed=9, keep_steps=[0, 3])
    alone, _ = record_trajectories(teacher, prompts[4:5], [4], global_seed=9, keep_steps=[0, 3])
    for key in ("noise", "states", "x0", "v_cond"):
        assert together[4][key].tobytes() == alone[0][key].tobytes()
    other_seed, _ = record_trajectories(teacher, prompts[4:5], [4], global_seed=10, keep_steps=[0, 3])
    assert other_seed[0]["noise"].tobytes() != alone[0]["noise"].tobytes()
    fp = cache_fingerprint(teacher, keep_steps=[0, 3], global_seed=9, half_dtype="float16",
                           negative_prompt="")
    with CacheWriter(str(tmp_path), layout=teacher.layout((0, 3)), fingerprint=fp,
                     samples_per_shard=4) as writer:
        for rec in together:
            writer.write(rec)
    assert [r["sample_id"] for r in CacheReader(str(tmp_path)).iter_records(["seed"])] == \
        [r["sample_id"] for r in together]
    assert fingerprint_digest(fp) == writer.manifest.fingerprint_digest


def test_bad_prompts_are_rejected_with_reasons_not_crashes():
    teacher = build_teacher("analytic", num_steps=4)
    prompts = ["a red square moving left", "", "   ", "word " * 40, b"\xff\xfe", "bell\x07 ring",
               "a blue ring moving right"]
    records, rejected = record_trajectories(teacher, prompts, range(len(prompts)), global_seed=0,
                                            keep_steps=[0])
    assert [r["prompt"] for r in records] == ["a red square moving left", "a blue ring moving right"]
    reasons = {r.index: r.reason for r in rejected}
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert "empty" in reasons[1] and "empty" in reasons[2]
    assert "limit of 16" in reasons[3] and "UTF-8" in reasons[4] and "control" in reasons[5]


def test_analytic_records_do_not_depend_on_the_micro_batch():
    """The analytic teacher (the default kind) is batch invariant too: micro-batch 0 (the whole
    call), 1 and 3 give byte-identical records."""
    teacher = build_teacher("analytic", num_steps=6, latent_shape=(4, 5, 8, 8))
    prompts = [f"a {c} {o} moving {m}" for o in ("square", "ring") for c in ("red", "blue")
               for m in ("left", "right")]
    runs = []
    for micro_batch in (0, 1, 3):
        records, rejected = record_trajectories(teacher, prompts, list(range(8)), global_seed=0,
                                                keep_steps=range(6), micro_batch=micro_batch)
        assert not rejected and len(records) == 8
        runs.append({r["sample_id"]: {k: np.asarray(v).tobytes() for k, v in r.items()} for r in records})
    assert runs[1] == runs[0] and runs[2] == runs[0]
