"""The quality table: the analytic oracle's scores (pipeline.eval.evaluate_checkpoint's dicts,
eval_kd.json and eval_ar.json) of the teacher full-step and few-step, S2DiT-KD and S2DiT-AR
streaming (at each evaluated length), on held-out seeds of trained classes and on unseen
attribute combinations; the teacher's full-step row marked as the reference, every other row
with the gate's verdict against it, and the per-chunk curves of the streaming rows."""

from __future__ import annotations

from typing import Any

from .html import esc, fmt, pending
from .svg import line_chart

SETS = (("held_out_seeds", "held-out seeds"), ("unseen_combinations", "unseen classes"))
METRICS = (("adherence", "adherence \u2191"), ("coverage", "coverage \u2191"),
           ("dispersion_ratio", "dispersion (1 = data)"), ("amplitude_bias", "amplitude bias"),
           ("ghost_energy", "ghost energy \u2193"), ("mode_tv", "mode TV \u2193"),
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


def quality_rows(eval_kd: dict[str, Any] | None, eval_ar: dict[str, Any] | None
                 ) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(model label, source, set label, scores or None when pending) in table order."""
    rows = []
    for set_key, set_label in SETS:
        kd = (eval_kd or {}).get(set_key)
        ar = (eval_ar or {}).get(set_key)
        if kd is None and ar is None and set_key != "held_out_seeds":
            continue  # a run that trains on every class has no unseen combinations
        teacher_src = kd if kd is not None else ar
        teacher_from = "eval_kd.json" if kd is not None else "eval_ar.json"
        few = _few_key(teacher_src or {}, "teacher_") if teacher_src else None
        rows.append(("teacher, full-step", teacher_from, set_label,
                     (teacher_src or {}).get("teacher_fullstep")))
        rows.append((f"teacher, {few.removeprefix('teacher_').replace('step', '-step') if few else 'few-step'}",
                     teacher_from, set_label, (teacher_src or {}).get(few) if few else None))
        kd_key = _few_key(kd or {}, "student_")
        rows.append(("S2DiT-KD", "eval_kd.json", set_label, (kd or {}).get(kd_key) if kd_key else None))
        ar_key = _few_key(ar or {}, "student_ar_", "_streaming")
        rows.append(("S2DiT-AR, streaming", "eval_ar.json", set_label,
                     (ar or {}).get(ar_key) if ar_key else None))
        for length in (eval_ar or {}).get("lengths", [1])[1:] if ar_key else ():
            rows.append((f"S2DiT-AR, streaming {length}x", "eval_ar.json", set_label,
                         ar.get(f"{ar_key}_{length}x")))
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


def quality_table(eval_kd: dict[str, Any] | None, eval_ar: dict[str, Any] | None,
                  missing: dict[str, str] | None = None) -> str:
    """The table (id ``quality``), each missing score a 'pending' row (or ``missing[file]``,
    e.g. "skipped: ..."), never an error."""
    missing = missing or {}
    if eval_kd is None and eval_ar is None:
        why = "; ".join(f"{k}: {v}" for k, v in missing.items())
        return pending(f"no evaluation has run yet (stages eval_kd, eval_ar){': ' + why if why else ''}") + _empty_table()
    head = "".join(f"<th>{esc(h)}</th>" for h in ("model", "prompts", "gate", *(label for _, label in METRICS)))
    body = []
    for model, source, set_label, scores in quality_rows(eval_kd, eval_ar):
        cells = f"<td>{esc(model)}</td><td>{esc(set_label)}</td>"
        if scores is None:
            cells += (f'<td class="pending" colspan="{len(METRICS) + 1}">'
                      f'{esc(missing.get(source, "pending"))} ({esc(source)})</td>')
        else:
            cells += _gate_cell(model, scores) + "".join(_cell(scores, k) for k, _ in METRICS)
        body.append(f"<tr>{cells}</tr>")
    notes = []
    for name, ev in (("S2DiT-KD", eval_kd), ("S2DiT-AR", eval_ar)):
        if ev:
            notes.append(f"{name}: {esc(ev.get('checkpoint'))} (step {fmt(ev.get('step'))}, "
                         f"{fmt(ev.get('trained_classes'))} trained classes, {fmt(ev.get('per_class'))} "
                         "samples per class)")
    return (f'<table id="quality"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            + "".join(f'<p class="muted">{n}</p>' for n in notes))


def chunk_curves(eval_ar: dict[str, Any] | None) -> str:
    """Per-chunk dispersion, amplitude and recall of S2DiT-AR streaming at every evaluated
    length (id ``chunk-curves``), the teacher's own curves beside them."""
    held = (eval_ar or {}).get("held_out_seeds") or {}
    streams = {k: v for k, v in held.items() if "streaming" in k and isinstance(v, dict) and "per_chunk" in v}
    if not streams:
        return pending("no streaming scores yet (stage eval_ar)")
    charts = []
    for metric, title in (("dispersion", "dispersion per chunk (r / s)"), ("amplitude", "amplitude per chunk (1 = mode)"),
                          ("recall", "identity recall per chunk")):
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
