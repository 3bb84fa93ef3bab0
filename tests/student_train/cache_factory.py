"""Tiny analytic-teacher caches for the training tests: 8-step trajectories, fp16, 8 per shard."""

from __future__ import annotations

from pathlib import Path

from cache_schema import CacheWriter
from teacher_jobs.analytic_corpus import class_prompts
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import build_teacher


def analytic_records(*, keep: tuple[int, ...] = tuple(range(8)), seeds: int = 4,
                     latent_shape: tuple[int, int, int, int] = (4, 5, 8, 8),
                     causal_chunk_frames: int = 0, **task):
    """(records, layout, fingerprint): ``seeds`` trajectories of every class prompt (with causal
    ODE pairs of ``causal_chunk_frames``-frame chunks when > 0); ``task``: more of the analytic
    teacher's settings (e.g. task="memory", visible_frames, gap_frames)."""
    pairs = {"causal_chunk_frames": causal_chunk_frames} if causal_chunk_frames else {}
    teacher = build_teacher("analytic", num_steps=8, latent_shape=latent_shape, **pairs, **task)
    prompts = [p for p in class_prompts() for _ in range(seeds)]
    records, _ = record_trajectories(teacher, prompts, [i % seeds for i in range(len(prompts))],
                                     global_seed=0, keep_steps=keep)
    fp = cache_fingerprint(teacher, keep_steps=keep, global_seed=0, half_dtype="float16",
                           negative_prompt="")
    return records, teacher.layout(keep), fp


def make_cache(path: Path | str, *, keep: tuple[int, ...] = tuple(range(8)), seeds: int = 4,
               latent_shape: tuple[int, int, int, int] = (4, 5, 8, 8),
               causal_chunk_frames: int = 0, **task) -> str:
    """A cache of ``analytic_records``, 8 records per shard, one generation."""
    records, layout, fp = analytic_records(keep=keep, seeds=seeds, latent_shape=latent_shape,
                                           causal_chunk_frames=causal_chunk_frames, **task)
    with CacheWriter(str(path), layout=layout, fingerprint=fp, samples_per_shard=8) as writer:
        for rec in records:
            writer.write(rec)
    return str(path)
