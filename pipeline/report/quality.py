"""The quality table: the analytic oracle's scores (pipeline.eval.evaluate_checkpoint's dicts,
one per scored training stage: eval_kd.json and eval_ar.json) of the teacher full-step and
few-step (Euler, and UniPC when the scores have it) and of each stage's student (S2DiT-KD;
S2DiT-AR streaming at each evaluated length), on held-out seeds of trained classes and on
unseen attribute combinations; the teacher's full-step row marked as the reference, every
other row with the gate's verdict against it, and the per-chunk curves of the streaming rows.
Which stages, their names and which of them stream come from the run graph's registry
(trained.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.eval import STRONG_SOLVER, STRONG_SOLVER_TITLE, student_rows

from .html import esc, fmt, pending
from .svg import line_chart
from .trained import Trained, scored_stages

SETS = (("held_out_seeds", "held-out seeds"), ("unseen_combinations", "unseen classes"))
METRICS = (("adherence", "adherence \u2191"), ("coverage", "coverage \u2191"),
           ("dispersion_ratio", "dispersion (1 = data)"), ("amplitude_bias", "amplitude bias"),
           ("ghost_energy", "ghost energy \u2193"), ("contrast", "contrast (1 = data)"),
           ("mode_tv", "mode TV \u2193"),
           ("recall", "recall \u2191"), ("branch_rate", "went on (0.5)"),
           ("nll_per_dim", "NLL/dim"), ("samples", "samples"))


def _few_key(scores: dict[str, Any], prefix: str, suffix: str = "") -> str | None:
    """The few-step model key of a score set, e.g. teacher_4step or student_ar_4step_streaming."""
    for key in scores:
        middle = key.removeprefix(prefix).removesuffix(suffix)
        if key.startswith(prefix) and key.endswith(suffix) and middle.endswith("step") \
                and middle[:-4].isdigit():
            return key
    return None


Report = dict[str, Any] | None


def _student_rows(model: Trained, report: Report, scores: dict[str, Any] | None
                  ) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(label, source, scores or None) of one stage's student in one prompt set: its few-step
    row, or for a stage that streams its streaming row at each evaluated length."""
    scores = scores or {}
    if not model.streams:
        key = _few_key(scores, "student_")
        return [(model.model, model.scores, scores.get(key) if key else None)]
    key = _few_key(scores, student_rows(True), "_streaming")
    rows = [(f"{model.model}, streaming", model.scores, scores.get(key) if key else None)]
    for length in (report or {}).get("lengths", [1])[1:] if key else ():
        rows.append((f"{model.model}, streaming {length}x", model.scores, scores.get(f"{key}_{length}x")))
    return rows


def _teacher_rows(scores: dict[str, Any] | None) -> list[tuple[str, dict[str, Any] | None]]:
    """(label, scores or None) of the teacher: full-step, few-step Euler, and few-step UniPC
    when the scores have it (files from before that row have not)."""
    scores = scores or {}
    few = _few_key(scores, "teacher_")
    label = few.removeprefix("teacher_").replace("step", "-step") if few else "few-step"
    rows = [("teacher, full-step", scores.get("teacher_fullstep")),
            (f"teacher, {label}", scores.get(few) if few else None)]
    strong = f"{few}_{STRONG_SOLVER}"
    if few and strong in scores:
        rows.append((f"teacher, {label} {STRONG_SOLVER_TITLE}", scores[strong]))
    return rows


def quality_rows(*reports: Report, models: Sequence[Trained] | None = None
                 ) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(model label, source, set label, scores or None when pending) in table order.
    ``reports``: one per scored stage of ``models`` (default: the registered ones, in order)."""
    models = tuple(scored_stages() if models is None else models)
    if len(reports) != len(models):
        raise ValueError(f"{len(reports)} score reports for {len(models)} scored stages "
                         f"({', '.join(m.scored_by for m in models)})")
    rows = []
    for set_key, set_label in SETS:
        sets = [(model, report, (report or {}).get(set_key)) for model, report in zip(models, reports)]
        if all(scores is None for *_, scores in sets) and set_key != "held_out_seeds":
            continue  # a run that trains on every class has no unseen combinations
        teacher_from, teacher_src = next(((m.scores, s) for m, _, s in sets if s is not None),
                                         (models[-1].scores if models else "", None))
        rows.extend((label, teacher_from, set_label, row) for label, row in _teacher_rows(teacher_src))
        for model, report, scores in sets:
            rows.extend((label, source, set_label, row)
                        for label, source, row in _student_rows(model, report, scores))
    return rows


def _cell(scores: dict[str, Any], key: str) -> str:
    value = scores.get(key)
    ci = scores.get(f"{key}_ci")
    if value is None:
        return '<td class="num muted">-</td>'
    title = f' title="95% interval {ci[0]:.3f} to {ci[1]:.3f}"' if ci else ""
    return f'<td class="num"{title}>{fmt(value)}</td>'


def _gate_cell(model: str, scores: dict[str, Any]) -> str:
    """The reference row (the teacher's full-step samples) is what the others are gated
    against: it says so. Files from before rows had a ``role`` show a gate on S2DiT rows only."""
    gate = scores.get("gate")
    role = scores.get("role", "student" if model.startswith("S2DiT") else None)
    if role == "reference":
        return '<td class="muted" title="the other rows are gated against this one">reference</td>'
    if role is None or not gate:
        return '<td class="muted">-</td>'
    if gate["passed"]:
        return '<td class="ok">pass</td>'
    return f'<td class="error">fail: {esc(", ".join(gate["failed"]))}</td>'


def _scored_as(report: dict[str, Any]) -> str:
    """What ``[eval]`` set beyond the defaults: the student rows' guidance, the unseen subset,
    LCHA's streaming sums windowed."""
    out = f", guidance {fmt(report['guidance'])}" if "guidance" in report else ""
    if "lcha_window" in report:
        out += f", LCHA sums windowed to the first chunk and the last {esc(report['lcha_window'])}"
    if report.get("unseen_subset", "all") != "all":
        out += f", unseen classes: the {esc(report['unseen_subset'])} subset"
    return out


def quality_table(*reports: Report, missing: dict[str, str] | None = None,
                  models: Sequence[Trained] | None = None) -> str:
    """The table (id ``quality``) of ``reports``, one per scored stage of ``models`` (default:
    the registered ones), each missing score a 'pending' row (or ``missing[file]``, e.g.
    "skipped: ..."), never an error."""
    missing = missing or {}
    models = tuple(scored_stages() if models is None else models)
    if all(report is None for report in reports):
        why = "; ".join(f"{k}: {v}" for k, v in missing.items())
        names = ", ".join(m.scored_by for m in models)
        return pending(f"no evaluation has run yet (stages {names}){': ' + why if why else ''}") + _empty_table()
    head = "".join(f"<th>{esc(h)}</th>" for h in ("model", "prompts", "gate", *(label for _, label in METRICS)))
    body = []
    for model, source, set_label, scores in quality_rows(*reports, models=models):
        cells = f"<td>{esc(model)}</td><td>{esc(set_label)}</td>"
        if scores is None:
            cells += (f'<td class="pending" colspan="{len(METRICS) + 1}">'
                      f'{esc(missing.get(source, "pending"))} ({esc(source)})</td>')
        else:
            cells += _gate_cell(model, scores) + "".join(_cell(scores, k) for k, _ in METRICS)
        body.append(f"<tr>{cells}</tr>")
    notes = []
    for name, ev in ((m.model, report) for m, report in zip(models, reports)):
        if ev:
            notes.append(f"{name}: {esc(ev.get('checkpoint'))} (step {fmt(ev.get('step'))}, "
                         f"{fmt(ev.get('trained_classes'))} trained classes, {fmt(ev.get('per_class'))} "
                         f"samples per class{_scored_as(ev)})")
    return (f'<table id="quality"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            + "".join(f'<p class="muted">{n}</p>' for n in notes))


def chunk_curves(report: Report, scored_by: str = "") -> str:
    """Per-chunk dispersion, amplitude, contrast and recall of a streaming student (S2DiT-AR) at every
    evaluated length (id ``chunk-curves``), the teacher's own curves beside them."""
    held = (report or {}).get("held_out_seeds") or {}
    streams = {k: v for k, v in held.items() if "streaming" in k and isinstance(v, dict) and "per_chunk" in v}
    if not streams:
        return pending(f"no streaming scores yet{f' (stage {scored_by})' if scored_by else ''}")
    charts = []
    for metric, title in (("dispersion", "dispersion per chunk (r / s)"), ("amplitude", "amplitude per chunk (1 = mode)"),
                          ("contrast", "contrast per chunk (1 = data)"), ("recall", "identity recall per chunk")):
        series = {}
        for key, scores in streams.items():
            values = scores["per_chunk"].get(metric)
            if values:
                series[key.rsplit("streaming", 1)[1].lstrip("_") or "1x"] = [
                    (i, v) for i, v in enumerate(values) if v is not None]
        if series:
            charts.append(line_chart(title, series, x_label="chunk"))
    return f'<div class="charts" id="chunk-curves">{"".join(charts)}</div>'


def _empty_table() -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in ("model", "prompts", "gate", *(label for _, label in METRICS)))
    return f'<table id="quality"><thead><tr>{head}</tr></thead><tbody></tbody></table>'
