"""The stages of `s2dit run`, in order (one module each)."""

from __future__ import annotations

from ..stage import Stage
from . import corpus, evaluate, generate, report, sample, tag, train_ar, train_kd, verify

STAGES: tuple[Stage, ...] = (corpus.STAGE, generate.STAGE, verify.STAGE, tag.STAGE,
                             train_kd.STAGE, evaluate.EVAL_KD, train_ar.STAGE, evaluate.EVAL_AR,
                             sample.STAGE, report.STAGE)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
