"""Naming a student's errors on a class (issue 26): which attribute it got wrong, which trained
class it produced instead.

A sample is wrong when its nearest mode over every class's modes (adherence's rule,
analytic_score) is not its prompt's class. For a wrong sample the oracle names the trained
neighbour it produced: the class of its nearest mode among the trained classes' modes, and the
attributes (object, colour, motion) in which that class differs from the prompt's. Per class:
the share of its samples wrong in each attribute and the most frequent neighbour with its share,
and the trained classes that alone carry a pair of its attributes (``pinned_by``: where the
split gives a shortcut, analytic_corpus.pinning_classes), which its errors often are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analytic_corpus import TEMPLATE, attribute_values, pinning_classes
from .analytic_score import _nearest_all

ATTRIBUTES = ("object", "colour", "motion")  # the order of AnalyticTeacher.classes' tuples


def class_prompt(attributes: tuple[str, str, str]) -> str:
    obj, colour, motion = attributes
    return TEMPLATE.format(obj=obj, colour=colour, motion=motion)


def class_errors(teacher, x0: np.ndarray, prompts: list[str], trained: set[int]) -> list[dict[str, Any]]:
    """One row per prompt class (in order of first appearance): ``class``, ``samples``,
    ``adherence``, ``wrong`` (share of the class's samples whose trained neighbour differs in
    each attribute), ``neighbour`` (the most frequent trained neighbour of its wrong samples,
    None when none is wrong) and ``neighbour_share`` (of all its samples). ``trained``: class
    indices of the trained classes."""
    if not trained:
        raise ValueError("naming errors needs the trained classes (their modes are the neighbours)")
    flat = np.asarray(x0, dtype=np.float64).reshape(len(prompts), -1)
    k = teacher.means.shape[1]
    produced = _nearest_all(flat, teacher.means.reshape(-1, flat.shape[1]))[0] // k  # (n,)
    order = np.array(sorted(trained))
    trained_modes = teacher.means[order].reshape(-1, flat.shape[1])
    neighbour = order[_nearest_all(flat, trained_modes)[0] // k]  # (n,) a trained class each
    classes = np.array([teacher.class_of(p) for p in prompts])
    counts_of = attribute_values(teacher.config)
    trained_attrs = [teacher.classes[t] for t in sorted(trained)]
    rows = []
    for c in dict.fromkeys(classes.tolist()):
        idx = np.flatnonzero(classes == c)
        wrong = idx[produced[idx] != c]
        own = teacher.classes[c]
        shares = {name: sum(teacher.classes[g][a] != own[a] for g in neighbour[wrong]) / len(idx)
                  for a, name in enumerate(ATTRIBUTES)}
        top, count = (None, 0)
        if len(wrong):
            values, counts = np.unique(neighbour[wrong], return_counts=True)
            top, count = int(values[counts.argmax()]), int(counts.max())
        rows.append({"class": class_prompt(own), "samples": len(idx),
                     "adherence": 1.0 - len(wrong) / len(idx),
                     "wrong": {name: float(v) for name, v in shares.items()},
                     "neighbour": None if top is None else class_prompt(teacher.classes[top]),
                     "neighbour_share": count / len(idx),
                     "pinned_by": [] if c in trained else [
                         class_prompt(t) for t in pinning_classes(trained_attrs, own, counts_of)]})
    return rows


def format_errors(rows: list[dict[str, Any]]) -> list[str]:
    """One short line per class: adherence, the attribute shares wrong, the top neighbour."""
    lines = []
    for r in rows:
        wrong = ", ".join(f"{a} {v:.2f}" for a, v in r["wrong"].items() if v)
        made = (f"; made '{r['neighbour']}' {r['neighbour_share']:.2f}" if r["neighbour"] else "")
        pinned = ", ".join(f"'{c}'" for c in r.get("pinned_by", []))
        pinned = f"; pinned by {pinned}" if pinned else ""
        lines.append(f"      {r['class']:28s} adherence {r['adherence']:.2f}"
                     + (f"  wrong: {wrong}" if wrong else "") + made + pinned)
    return lines
