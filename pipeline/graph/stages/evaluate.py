"""Stages eval_<name>: the analytic oracle's scores of a training stage's checkpoint against the
teacher (held-out seeds of the trained classes, unseen combinations; a checkpoint whose stage
streams, S2DiT-AR, chunk by chunk).

A training stage is scored when its one ``register_training_stage`` call passes
``evaluation=Evaluation(order=...)`` (training.py): its eval stage is derived here from the
training stage (eval_kd scores train_kd into eval_kd.json). It is asked for, not implied: the
oracle scores only students of the analytic task, and the eval stage needs its own place in
the graph.

Reads ``[eval]``: per_class (held-out samples per class), seed, lengths (multiples of the
trained clip length S2DiT-AR streams, e.g. [1, 2, 4]), noise ("report", or "tune" for a run
that chooses a recipe), teacher_forced (streaming stages only: N latent frames or "auto", the
diagnostic teacher-forced streaming row of pipeline.eval), guidance and unseen (as ``s2dit eval
--guidance G --unseen SUBSET``: classifier-free guidance of the student rows, default 1 = off;
the unseen classes scored, "all" by default, "report", or "validation" for recipe decisions,
never reported: the run's report shows no validation rows), lcha_window (streaming stages only:
past chunks or "trained", LCHA's sums windowed as ``s2dit eval --lcha-window``; default: as
trained). A key left out is not part of the
stage's fingerprint (the section is fingerprinted as written), so runs scored before these keys
existed stay up to date. ``guidance`` != 1 is refused when the config says a scored student is
trained without conditioning dropout (``cond_dropout`` = 0: no unconditional mode), ``unseen``
other than "all" when the analytic corpus holds out too few classes for that subset. Only a
teacher with an oracle (the analytic one) can score: on another teacher's cache the stage is
skipped with that reason."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import fsspec

from cache_schema.redact import redact_secrets
from pipeline.eval import evaluate_checkpoint, format_report
from student_train.guidance import check_guidance
from student_train.model.bounded import check_past_chunks
from student_train.stage_spec import TrainingStage
from teacher_jobs.analytic_corpus import UNSEEN_SUBSETS, class_prompts, unseen_subsets
from teacher_jobs.teachers import has_oracle

from ..config import RunConfig, refuse_unknown_keys
from ..stage import Stage, StageContext
from ..state_schema import PATH, optional
from .corpus import TRAIN_CLASSES

KEYS = {"per_class", "seed", "lengths", "noise", "teacher_forced", "guidance", "unseen", "lcha_window"}
DEFAULT_GUIDANCE, DEFAULT_UNSEEN = 1.0, "all"  # evaluate_checkpoint's: the outputs of before


def _oracle_only(ctx: StageContext) -> str | None:
    teacher = ctx.outputs("generate").get("teacher")
    if teacher is not None and not has_oracle(teacher):
        return (f"scores need a teacher with an oracle (e.g. the analytic teacher); this cache was "
                f"made by {teacher!r}, which has none")
    return None


def _section(config: RunConfig) -> dict[str, Any]:
    section = config.section("eval")
    refuse_unknown_keys("eval", section, KEYS)
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
    guidance = section.get("guidance", DEFAULT_GUIDANCE)
    if isinstance(guidance, bool) or not isinstance(guidance, int | float) \
            or not math.isfinite(guidance) or guidance <= 0:
        raise ValueError(f"[eval] guidance must be a number > 0 (classifier-free guidance of the "
                         f"student's samples; 1 = off), got {guidance!r}")
    _check_unseen(config, section.get("unseen", DEFAULT_UNSEEN))
    # LCHA's streaming sums windowed, as s2dit eval --lcha-window
    check_past_chunks(section.get("lcha_window"), "[eval] lcha_window")
    return section


def _check_unseen(config: RunConfig, unseen: Any) -> None:
    """``unseen`` is a subset name, and one the run's corpus has classes for when the config
    tells (an analytic corpus: the classes it holds out; another kind: the cache tells later)."""
    if unseen not in UNSEEN_SUBSETS:
        raise ValueError(f"[eval] unseen must be one of {list(UNSEEN_SUBSETS)} (the unseen classes "
                         f"scored, as s2dit eval --unseen), got {unseen!r}")
    corpus = config.sections.get("corpus", {})
    if unseen == DEFAULT_UNSEEN or corpus.get("kind", "analytic") != "analytic":
        return
    train_classes = corpus.get("train_classes", TRAIN_CLASSES)
    if not isinstance(train_classes, int):
        return  # the corpus stage's check says what is wrong with it
    held = [str(i) for i in range(max(len(class_prompts()) - train_classes, 0))]
    if not unseen_subsets(held)[unseen]:
        raise ValueError(f"[eval] unseen = {unseen!r}: the analytic corpus holds out "
                         f"{len(held)} class(es) ([corpus] train_classes = {train_classes} of "
                         f"{len(class_prompts())}), which leaves no {unseen!r} subset (a third of "
                         f"them, at least one, is 'validation' when there are two or more): hold "
                         f"out more classes or use unseen = 'all'")


def _check(config: RunConfig, scored: str, dropout: Callable[[RunConfig], float | None]) -> None:
    """The section, and ``guidance`` != 1 only for a student the config says is trained with
    conditioning dropout (``dropout``: what its checkpoint will say, None: it is not trained)."""
    section = _section(config)
    guidance = section.get("guidance", DEFAULT_GUIDANCE)
    trained = dropout(config) if guidance != DEFAULT_GUIDANCE else None
    if trained is not None:
        try:
            check_guidance(guidance, trained, f"the student {scored} trains (as the run config sets it)")
        except ValueError as exc:  # the refusal s2dit eval --guidance gives its checkpoint
            raise ValueError(f"[eval] {exc}") from None


def _evaluate(ctx: StageContext, train_stage: str, out_name: str, *,
              streams: bool = False) -> dict[str, Any]:
    section = _section(ctx.config)
    checkpoint = ctx.outputs(train_stage)["checkpoint"]
    scores = evaluate_checkpoint(checkpoint, per_class=section.get("per_class", 24),
                                 seed=section.get("seed", 0), noise=section.get("noise", "report"),
                                 lengths=tuple(section.get("lengths", (1,))),
                                 teacher_forced=section.get("teacher_forced") if streams else None,
                                 guidance=float(section.get("guidance", DEFAULT_GUIDANCE)),
                                 unseen=section.get("unseen", DEFAULT_UNSEEN),
                                 whole_clip=not streams,  # a streaming student's figures stream
                                 lcha_window=section.get("lcha_window") if streams else None)
    with fsspec.open(ctx.path(out_name), "w") as handle:
        json.dump(redact_secrets(scores), handle, indent=1)
    ctx.console.print(format_report(scores), soft_wrap=True)
    return {"scores": ctx.path(out_name), "checkpoint": checkpoint}


RECORDED = {"scores": PATH, "checkpoint": optional(PATH)}
PREFIX = "eval_"  # graph stage eval_<name> scores the registered training stage <name>


@dataclass(frozen=True, kw_only=True, slots=True)
class Evaluation:
    """Where a training stage's eval stage sits in the run graph, and its line there."""

    order: int  # after its training stage's
    title: str = ""  # default "score <spec title> with the analytic oracle"


def _unknown_dropout(config: RunConfig) -> None:
    del config


def evaluation_stage(spec: TrainingStage, trained: str, evaluation: Evaluation,
                     dropout: Callable[[RunConfig], float | None] = _unknown_dropout) -> Stage:
    """The stage eval_<name> that scores training stage ``spec`` (graph stage ``trained``);
    ``dropout``: the conditioning dropout its student will be trained with, as the run config
    says (None: it cannot tell), for refusing ``guidance`` early."""
    name = f"{PREFIX}{spec.name}"
    out = f"{name}.json"
    return Stage(name=name, title=evaluation.title or f"score {spec.title} with the analytic oracle",
                 section="eval", seeded=True, artefact=out,
                 run=functools.partial(_evaluate, train_stage=trained, out_name=out,
                                       streams=spec.finished_streams),
                 needs=(trained, "generate"), writes=(out,), skip_reason=_oracle_only,
                 check=functools.partial(_check, scored=trained, dropout=dropout), recorded=RECORDED)


def scorer(stages: Iterable[Stage], trained: str) -> Stage | None:
    """Of ``stages``, the one that scores training stage ``trained`` (None: it is not scored)."""
    return next((s for s in stages if trained in s.needs and "scores" in s.recorded), None)
