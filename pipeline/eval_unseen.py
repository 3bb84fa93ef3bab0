"""What pipeline.eval adds for unseen attribute combinations and guided students (issue 26).

- ``unseen_set``: which held-out classes an evaluation scores: "all" (as before, key
  ``unseen_combinations``), "report" (the reporting subset, same key) or "validation" (the
  subset for recipe decisions, key ``unseen_validation``, never in a reported figure); the
  subsets are teacher_jobs.analytic_corpus.unseen_subsets, disjoint, found from the cache alone.
- ``NamingOracle``: the oracle with each score of unseen classes naming its errors per class
  (teacher_jobs/teachers/analytic_errors.py: the attribute got wrong, the trained neighbour
  produced), kept on the student rows only (``keep_errors``).
- ``with_guidance``: a student sampled with classifier-free guidance (student_train/guidance.py),
  the null text being the teacher's embedding of the cache's negative prompt (what its
  ``v_uncond`` was computed with); guidance 1 is the student itself.
"""

from __future__ import annotations

from typing import Any

from teacher_jobs.analytic_corpus import UNSEEN_SUBSETS, unseen_subsets
from teacher_jobs.teachers.analytic_errors import class_errors

UNSEEN_KEYS = {"all": "unseen_combinations", "report": "unseen_combinations",
               "validation": "unseen_validation"}
ERROR_ROLES = ("student", "diagnostic")


def unseen_set(unseen: list[str], subset: str) -> tuple[str, list[str]]:
    """(report key, prompts) of the held-out classes ``subset`` names."""
    if subset not in UNSEEN_SUBSETS:
        raise ValueError(f"unseen must be one of {list(UNSEEN_SUBSETS)}, got {subset!r}")
    prompts = unseen if subset == "all" else unseen_subsets(unseen)[subset]
    if unseen and not prompts:
        raise ValueError(f"the {len(unseen)} unseen class(es) have no {subset!r} subset (one "
                         "class is reported only); use unseen = 'all'")
    return UNSEEN_KEYS[subset], prompts


class NamingOracle:
    """The analytic teacher whose ``score`` also names the errors per class (``errors``), the
    trained classes being the neighbours; everything else is the teacher's."""

    def __init__(self, teacher, trained: set[int]):
        self._teacher, self._trained = teacher, trained

    def __getattr__(self, name: str):
        return getattr(self._teacher, name)

    def at_length(self, frames: int) -> NamingOracle:
        return NamingOracle(self._teacher.at_length(frames), self._trained)

    def score(self, x0, prompts: list[str], **options: Any) -> dict[str, Any]:
        scores = self._teacher.score(x0, prompts, **options)
        scores["errors"] = class_errors(self._teacher, x0, prompts, self._trained)
        return scores


def keep_errors(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows with ``errors`` kept on the student (and diagnostic) rows only."""
    for row in rows.values():
        if row.get("role") not in ERROR_ROLES:
            row.pop("errors", None)
    return rows


class GuidedStudent:
    """A StudentCheckpoint whose ``sample`` applies classifier-free guidance."""

    def __init__(self, student, guidance: float, null):
        self._student, self.guidance, self._null = student, guidance, null

    def __getattr__(self, name: str):
        return getattr(self._student, name)

    def sample(self, *args: Any, **kwargs: Any):
        return self._student.sample(*args, guidance=self.guidance, null=self._null, **kwargs)


def with_guidance(student, guidance: float, teacher, fingerprint: dict[str, Any]):
    """``student`` itself for guidance 1; else, after checking that it was trained with
    conditioning dropout, the student sampled with guidance against the teacher's embedding of
    the cache's negative prompt."""
    student.check_guidance(guidance)
    if guidance == 1.0:
        return student
    null = teacher.encode_prompts([fingerprint.get("negative_prompt", "")])
    return GuidedStudent(student, guidance, (null.emb[0, : null.lengths[0]],
                                             null.emb.new_ones(null.lengths[0]).bool()))
