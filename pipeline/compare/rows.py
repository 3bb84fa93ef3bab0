"""Which rows of an evaluation report (pipeline.eval) a grid keeps, and which figures of each.

``student_scores``: the streaming student's row per length (what each cell is compared by).
``teacher_scores``: the teacher's own samplers, the reference points a reviewer asks for beside
the students (issue 26): its full-step sampler (the reference every row is gated against), and
its few-step Euler and UniPC (a strong solver) with no training at all. They are whole-clip
samplers, not streamed, so they have no per-chunk cost; and they are the same for every cell (the
teacher's samples depend on the task, the noise and the eval seed only), so the grid keeps them
once.
"""

from __future__ import annotations

import re
from typing import Any

SCORE_KEYS = ("adherence", "coverage", "recall", "branch_rate", "mode_tv", "amplitude_bias",
              "ghost_energy", "dispersion_ratio", "contrast", "samples")
SETS = ("held_out_seeds", "unseen_combinations")
TEACHER_ROLES = ("reference", "baseline")
_LENGTH_SUFFIX = re.compile(r"^(?P<name>.+?)_(?P<m>\d+)x$")


def kept_scores(row: dict[str, Any]) -> dict[str, Any]:
    """The few oracle figures the comparison shows, their Wilson intervals, the gate's verdict."""
    kept = {k: row[k] for k in SCORE_KEYS if k in row}
    kept.update({f"{k}_ci": row[f"{k}_ci"] for k in SCORE_KEYS if f"{k}_ci" in row})
    kept["gate"] = {"passed": bool(row["gate"]["passed"]), "failed": list(row["gate"]["failed"])}
    if row.get("errors"):  # an unseen set's classes, each error named (pipeline/eval_unseen.py)
        kept["errors"] = row["errors"]
    return kept


def _set_keys() -> tuple[str, ...]:
    from pipeline.eval_unseen import UNSEEN_KEYS

    return tuple(dict.fromkeys((*SETS, *UNSEEN_KEYS.values())))  # the validation subset too


def student_scores(report: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{set: {"4x": scores}} of the streaming rows of the evaluation of a checkpoint whose stage
    streams."""
    from pipeline.eval import student_rows

    prefix = student_rows(streams=True)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for set_key in _set_keys():
        rows = report.get(set_key)
        if not rows:
            continue
        base = next((k for k in rows if k.startswith(prefix) and k.endswith("_streaming")), None)
        if base is None:
            continue
        out[set_key] = {}
        for m in report["lengths"]:
            s = rows.get(base if m == 1 else f"{base}_{m}x")
            if s is not None:
                out[set_key][f"{m}x"] = kept_scores(s)
    return out


def teacher_scores(report: dict[str, Any]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """{set: {"1x": {"teacher_4step_unipc": scores, ...}, "4x": {"teacher_fullstep": ...}}}: every
    row of the report whose role is the teacher's (``reference``, ``baseline``), by the length its
    key names (``teacher_fullstep_4x`` is 4x; no suffix is 1x), with its role."""
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for set_key in _set_keys():
        for key, row in (report.get(set_key) or {}).items():
            if not isinstance(row, dict) or row.get("role") not in TEACHER_ROLES:
                continue
            match = _LENGTH_SUFFIX.match(key)
            name, length = (match["name"], f"{match['m']}x") if match else (key, "1x")
            out.setdefault(set_key, {}).setdefault(length, {})[name] = {**kept_scores(row), "role": row["role"]}
    return out
