"""Score a student checkpoint with the analytic teacher (the quality oracle of DESIGN 4.3).

Held-out prompts: the cache's trained prompts with seeds never cached (same classes, new
noise), and, reported apart, attribute combinations the cache never saw. Both the student
(4-step with its jump size, and full-step with d = 0 on the cache's sigma grid) and the
teacher's own few-step and full-step Euler are scored on the same noise. Streaming scores
(S2DiT-AR by default, a KD model on request) run the few-step sampler chunk by chunk with the
streaming state, each finished chunk committed clean as the next one's context.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from cache_schema import CacheReader, load_manifest
from cache_schema.noise import batch_noise
from cache_schema.sample_id import make_sample_id
from student_train.checkpoint import checkpoint_stage, load_checkpoint, split_prefix
from student_train.model import S2DiT, StudentConfig
from student_train.sampler import sample, sample_streaming
from teacher_jobs.sampler import sample_latents
from teacher_jobs.teachers.analytic import AnalyticConfig, AnalyticTeacher

HELD_OUT_SEED_BASE = 1_000_000  # cached seeds are small corpus counters; these never are


def analytic_teacher_of(fingerprint: dict[str, Any]) -> AnalyticTeacher:
    if fingerprint.get("teacher") != "analytic":
        raise ValueError(f"scoring needs the analytic teacher; this cache was made by "
                         f"{fingerprint.get('teacher')!r}")
    cfg = dict(fingerprint["config"])
    for key in ("latent_shape", "objects", "colours", "motions", "guidance"):
        cfg[key] = tuple(cfg[key])
    return AnalyticTeacher(AnalyticConfig(**cfg))


def load_student(checkpoint_url: str, *, ema: bool = True) -> tuple[S2DiT, dict[str, Any]]:
    tensors, state = load_checkpoint(checkpoint_url)
    model = S2DiT(StudentConfig.from_json(state["model_config"]))
    model.load_state_dict(split_prefix(tensors, "ema" if ema else "model"))
    return model.eval(), state


def trained_context_sigma(state: dict[str, Any]) -> float:
    """The noise level an S2DiT-AR run committed finished chunks at (its ``context_sigma``):
    streaming sampling must commit at the same level. KD checkpoints: clean (0)."""
    if checkpoint_stage(state) == "kd":  # stage 2's "causal" and "ar" both commit chunks
        return 0.0
    return float(state.get("config", {}).get("context_sigma", 0.0))


def _score_set(teacher, model, prompts, seeds, digest, plan, global_seed, *,
               streaming: str | None = None, chunk_frames: int | None = None,
               context_sigma: float = 0.0) -> dict[str, Any]:
    ids = [make_sample_id(p, s, digest) for p, s in zip(prompts, seeds)]
    noise = torch.from_numpy(batch_noise(global_seed, ids, teacher.latent_shape))
    text = teacher.encode_prompts(prompts)
    out: dict[str, Any] = {}
    with torch.no_grad():
        for name, sigmas, jump in (("student_4step", plan["schedule_sigmas"], True),
                                   ("student_fullstep_grid", plan["grid_sigmas"], False)):
            x0 = sample(model, noise, text.emb, text.mask, sigmas, use_step_size=jump)
            out[name] = teacher.score(x0.numpy(), prompts)
        if streaming:  # chunk by chunk, each finished chunk committed as the next's context
            x0 = sample_streaming(model, noise, text.emb, text.mask, plan["schedule_sigmas"],
                                  chunk_frames, context_sigma=context_sigma)
            out[streaming] = teacher.score(x0.numpy(), prompts)
    few = len(plan["schedule_sigmas"]) - 1
    for name, steps in ((f"teacher_{few}step", few), ("teacher_fullstep", teacher.num_steps)):
        out[name] = _teacher_score(teacher, steps, prompts, seeds, digest, global_seed)
    return out


# The teacher's rows depend only on the teacher, the prompts, the noise and the step count, not
# on the student: eval_ar scores the same held-out noise as eval_kd, so in one process (`s2dit
# run`) the second evaluation reuses the first's teacher scores instead of sampling again.
_TEACHER_SCORES: dict[tuple, dict[str, Any]] = {}


def _teacher_score(teacher, steps, prompts, seeds, digest, global_seed) -> dict[str, Any]:
    config = AnalyticConfig(**{**teacher.config.__dict__, "num_steps": steps})  # frozen: hashable
    key = (config, tuple(prompts), tuple(int(s) for s in seeds), digest, int(global_seed))
    if key not in _TEACHER_SCORES:
        t = AnalyticTeacher(config)
        x0 = sample_latents(t, prompts, list(seeds), global_seed=global_seed, fingerprint_digest=digest)
        _TEACHER_SCORES[key] = t.score(x0, prompts)
    return dict(_TEACHER_SCORES[key])


def evaluate_checkpoint(checkpoint_url: str, *, per_class: int = 24, seed: int = 0,
                        streaming: bool | None = None, chunk_frames: int | None = None) -> dict[str, Any]:
    """Scores of a KD or AR checkpoint. ``streaming`` (default: on for S2DiT-AR) adds the
    few-step sampler run chunk by chunk with the streaming state: ``student_ar_4step_streaming``
    for an AR checkpoint, ``student_4step_streaming`` for a KD model sampled causally."""
    model, state = load_student(checkpoint_url)
    stage = checkpoint_stage(state)  # "kd", "causal" or "ar"
    is_ar = stage == "ar"
    few = len(state["plan"]["schedule_sigmas"]) - 1
    streaming_name = None
    if streaming or (streaming is None and is_ar):
        streaming_name = f"student_{'ar_' if is_ar else ''}{few}step_streaming"
    manifest = load_manifest(f"{state['manifest']['cache_url'].split('@')[0]}@{state['manifest']['generation']}")
    teacher = analytic_teacher_of(manifest.fingerprint)
    trained = sorted(set(CacheReader(state["manifest"]["cache_url"]).index().column("prompt").to_pylist()))
    trained_classes = {teacher.class_of(p) for p in trained}
    by_class: dict[int, str] = {}
    for p in trained:
        by_class.setdefault(teacher.class_of(p), p)
    unseen = [f"a {c} {o} moving {m}" for i, (o, c, m) in enumerate(teacher.classes)
              if i not in trained_classes]
    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {"checkpoint": checkpoint_url, "step": state["step"],
                              "stage": stage,
                              "trained_classes": len(trained_classes), "per_class": per_class}
    sets = {"held_out_seeds": [by_class[c] for c in sorted(by_class)]}
    if unseen:
        sets["unseen_combinations"] = unseen
    for name, class_prompts in sets.items():
        prompts = [p for p in class_prompts for _ in range(per_class)]
        seeds = list(HELD_OUT_SEED_BASE + rng.permutation(10**6)[: len(prompts)])
        report[name] = _score_set(teacher, model, prompts, seeds, manifest.fingerprint_digest,
                                  state["plan"], manifest.fingerprint["global_seed"],
                                  streaming=streaming_name, chunk_frames=chunk_frames,
                                  context_sigma=trained_context_sigma(state))
    return report


def format_report(report: dict[str, Any]) -> str:
    head = (f"checkpoint {report['checkpoint']} ({report.get('stage', 'kd').upper()} step "
            f"{report['step']}, {report['trained_classes']} trained classes, "
            f"{report['per_class']} samples per class)")
    lines = [head]
    for set_name in ("held_out_seeds", "unseen_combinations"):
        if set_name not in report:
            continue
        lines.append(f"  {set_name}:")
        for model_name, s in report[set_name].items():
            lines.append(f"    {model_name:28s} adherence {s['adherence']:.3f}  coverage {s['coverage']:.3f}"
                         f"  dispersion {s['dispersion_ratio']:.3f}  nll/dim {s['nll_per_dim']:.3f}")
    return "\n".join(lines)


def save_report(report: dict[str, Any], url: str) -> None:
    import fsspec

    with fsspec.open(url, "w") as handle:
        json.dump(report, handle, indent=1)
