"""Prompt corpora for the analytic teacher, with train and held-out splits.

Training prompts cover a chosen set of attribute combinations (classes); the remaining
combinations are held out entirely ("unseen combinations", reported apart, never a gate).
Held-out seeds for trained classes are produced at evaluation time (pipeline.eval).
"""

from __future__ import annotations

import itertools

import fsspec
import numpy as np

from .teachers.analytic import AnalyticConfig

TEMPLATE = "a {colour} {obj} moving {motion}"


DEFAULT_ANALYTIC = AnalyticConfig()


def class_prompts(config: AnalyticConfig = DEFAULT_ANALYTIC) -> list[str]:
    return [TEMPLATE.format(colour=c, obj=o, motion=m)
            for o, c, m in itertools.product(config.objects, config.colours, config.motions)]


def split_classes(config: AnalyticConfig = DEFAULT_ANALYTIC, *, train_classes: int = 12,
                  seed: int = 0) -> tuple[list[str], list[str]]:
    """(train prompts, unseen-combination prompts): a seeded choice of trained classes."""
    prompts = class_prompts(config)
    if not 1 <= train_classes <= len(prompts):
        raise ValueError(f"train_classes must be in [1, {len(prompts)}], got {train_classes}")
    order = np.random.default_rng(seed).permutation(len(prompts))
    chosen = sorted(order[:train_classes])
    return [prompts[i] for i in chosen], [prompts[i] for i in sorted(order[train_classes:])]


def write_corpus(url: str, prompts: list[str]) -> str:
    """One prompt per line (use the job's --seeds-per-prompt for trajectories per prompt)."""
    with fsspec.open(url, "w", encoding="utf-8") as handle:
        handle.write("".join(p + "\n" for p in prompts))
    return url
