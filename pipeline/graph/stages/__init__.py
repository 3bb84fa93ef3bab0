"""The stages of `s2dit run`, in order (one module each): the one list of run-graph stages.

Everything that lists stages derives from ``STAGES``: the run config's sections, the CLI's
choices and epilog, the report's stage table and artefacts, pipeline/run.py's docstring.
"""

from __future__ import annotations

from ..stage import Stage
from . import compare, corpus, evaluate, generate, report, sample, tag, train_ar, train_kd, verify

_WORK: tuple[Stage, ...] = (corpus.STAGE, generate.STAGE, verify.STAGE, tag.STAGE,
                            train_kd.STAGE, evaluate.EVAL_KD, train_ar.STAGE, evaluate.EVAL_AR,
                            sample.STAGE, compare.STAGE)
STAGES: tuple[Stage, ...] = (*_WORK, report.stage(tuple(s.name for s in _WORK)))
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
# The run config's sections: [run], then each stage's in stage order (stages may share one)
SECTIONS: tuple[str, ...] = ("run", *dict.fromkeys(s.section for s in STAGES))
SEEDED: frozenset[str] = frozenset(s.section for s in STAGES if s.seeded)


def stage_lines() -> list[str]:
    """One line per stage: number, name, section, what it writes and what it is."""
    lines = []
    for i, s in enumerate(STAGES, 1):
        writes = f" -> {', '.join(s.writes)}" if s.writes else ""
        resumable = " (resumable)" if s.resumable else ""
        lines.append(f"{i:>2}. {s.name:<9} {f'[{s.section}]':<10} {s.title}{writes}{resumable}")
    return lines
