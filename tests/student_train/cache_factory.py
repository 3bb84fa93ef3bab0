"""Tiny analytic-teacher caches for the training tests: 8-step trajectories, fp16, 8 per shard."""

from __future__ import annotations

from pathlib import Path

from cache_schema import CacheWriter
from teacher_jobs.analytic_corpus import class_prompts
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import build_teacher


def make_cache(path: Path, *, keep: tuple[int, ...] = tuple(range(8)), seeds: int = 4,
               latent_shape: tuple[int, int, int, int] = (4, 5, 8, 8)) -> str:
    """``seeds`` trajectories of every class prompt, the solver steps ``keep`` stored."""
    teacher = build_teacher("analytic", num_steps=8, latent_shape=latent_shape)
    prompts = [p for p in class_prompts() for _ in range(seeds)]
    records, _ = record_trajectories(teacher, prompts, [i % seeds for i in range(len(prompts))],
                                     global_seed=0, keep_steps=keep)
    fp = cache_fingerprint(teacher, keep_steps=keep, global_seed=0, half_dtype="float16",
                           negative_prompt="")
    with CacheWriter(str(path), layout=teacher.layout(keep), fingerprint=fp,
                     samples_per_shard=8) as writer:
        for rec in records:
            writer.write(rec)
    return str(path)
