"""Stages eval_kd / eval_ar: the analytic oracle's scores of a checkpoint against the teacher
(held-out seeds of the trained classes, unseen combinations; AR chunk by chunk).

Reads ``[eval]``: per_class (held-out samples per class), seed, lengths (multiples of the
trained clip length S2DiT-AR streams, e.g. [1, 2, 4]), noise ("report", or "tune" for a run
that chooses a recipe), teacher_forced (eval_ar only: N latent frames or "auto", the
diagnostic teacher-forced streaming row of pipeline.eval). Only a teacher with an oracle (the analytic one) can score: on another
teacher's cache the stage is skipped with that reason."""

from __future__ import annotations

import json
from typing import Any

import fsspec

from cache_schema.redact import redact_secrets
from pipeline.eval import evaluate_checkpoint, format_report
from teacher_jobs.teachers import has_oracle

from ..config import RunConfig
from ..registry import register_graph_stage
from ..stage import Stage, StageContext
from ..state_schema import PATH, optional

KEYS = {"per_class", "seed", "lengths", "noise", "teacher_forced"}


def _oracle_only(ctx: StageContext) -> str | None:
    teacher = ctx.outputs("generate").get("teacher")
    if teacher is not None and not has_oracle(teacher):
        return (f"scores need a teacher with an oracle (e.g. the analytic teacher); this cache was "
                f"made by {teacher!r}, which has none")
    return None


def _section(config: RunConfig) -> dict[str, Any]:
    section = config.section("eval")
    unknown = sorted(set(section) - KEYS)
    if unknown:
        raise ValueError(f"unknown [eval] keys {unknown}; known: {sorted(KEYS)}")
    lengths = section.get("lengths", [1])
    if not isinstance(lengths, list) or not lengths or not all(
            isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= 64 for m in lengths):
        raise ValueError(f"[eval] lengths must be a list of whole multiples of the trained clip "
                         f"length in [1, 64], e.g. [1, 2, 4]; got {lengths!r}")
    if section.get("noise", "report") not in ("report", "tune"):
        raise ValueError(f"[eval] noise must be 'report' or 'tune', got {section.get('noise')!r}")
    forced = section.get("teacher_forced")
    if forced is not None and forced != "auto" and (
            not isinstance(forced, int) or isinstance(forced, bool) or forced < 0):
        raise ValueError(f"[eval] teacher_forced must be a number of latent frames (>= 0) or "
                         f"'auto', got {forced!r}")
    return section


def _evaluate(ctx: StageContext, train_stage: str, out_name: str, *,
              streams: bool = False) -> dict[str, Any]:
    section = _section(ctx.config)
    checkpoint = ctx.outputs(train_stage)["checkpoint"]
    scores = evaluate_checkpoint(checkpoint, per_class=section.get("per_class", 24),
                                 seed=section.get("seed", 0), noise=section.get("noise", "report"),
                                 lengths=tuple(section.get("lengths", (1,))),
                                 teacher_forced=section.get("teacher_forced") if streams else None)
    with fsspec.open(ctx.path(out_name), "w") as handle:
        json.dump(redact_secrets(scores), handle, indent=1)
    ctx.console.print(format_report(scores), soft_wrap=True)
    return {"scores": ctx.path(out_name), "checkpoint": checkpoint}


RECORDED = {"scores": PATH, "checkpoint": optional(PATH)}


def _eval_kd(ctx: StageContext) -> dict[str, Any]:
    return _evaluate(ctx, "train_kd", "eval_kd.json")


def _eval_ar(ctx: StageContext) -> dict[str, Any]:
    return _evaluate(ctx, "train_ar", "eval_ar.json", streams=True)


EVAL_KD = Stage(name="eval_kd", title="score S2DiT-KD with the analytic oracle", section="eval",
                seeded=True, artefact="eval_kd.json",
                run=_eval_kd, needs=("train_kd", "generate"), writes=("eval_kd.json",),
                skip_reason=_oracle_only, check=_section, recorded=RECORDED)
EVAL_AR = Stage(name="eval_ar", title="score S2DiT-AR chunk by chunk", section="eval",
                seeded=True, artefact="eval_ar.json",
                run=_eval_ar, needs=("train_ar", "generate"), writes=("eval_ar.json",),
                skip_reason=_oracle_only, check=_section, recorded=RECORDED)
register_graph_stage(EVAL_KD, order=60)
register_graph_stage(EVAL_AR, order=80)
