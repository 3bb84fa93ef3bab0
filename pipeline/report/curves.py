"""Training curves of both stages from their metrics.jsonl: losses, learning rate, data wait
and throughput, as inline SVG."""

from __future__ import annotations

from typing import Any

from student_train.checkpoint import latest_checkpoint

from .html import esc, pending
from .run_folder import RunFolder
from .svg import line_chart


def _series(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(r["step"], r[key]) for r in rows if "step" in r and key in r and "event" not in r]


def _batch_size(run: RunFolder, folder: str) -> int | None:
    """The stage's batch size from its newest checkpoint's state.json (for samples/s)."""
    try:
        ckpt = latest_checkpoint(run.at(folder))
    except (OSError, ValueError):
        return None
    if not ckpt:
        return None
    rel = ckpt[len(run.url) + 1:] if ckpt.startswith(run.url + "/") else None
    state = run.json(f"{rel}/state.json").value if rel else None
    return (state or {}).get("config", {}).get("batch_size") if isinstance(state, dict) else None


def stage_curves(run: RunFolder, folder: str, title: str) -> str:
    rows = run.metrics(f"{folder}/metrics.jsonl")
    if not rows:
        return f"<h3>{esc(title)}</h3>" + pending(f"no metrics yet ({folder}/metrics.jsonl)")
    keys = sorted({k for r in rows for k in r})
    losses = [k for k in keys if k == "loss" or k.endswith("_loss")]
    charts = [line_chart("loss", {k: _series(rows, k) for k in losses}, log_y=True),
              line_chart("learning rate", {"lr": _series(rows, "lr")}),
              line_chart("data wait (s per logged step)", {"loader wait": _series(rows, "loader_wait_s")})]
    if "samples_per_s" in keys:
        charts.append(line_chart("samples/s", {"samples/s": _series(rows, "samples_per_s")}))
    elif "step_seconds" in keys:  # stage 2 logs the step's seconds; its batch size is in its state
        batch = _batch_size(run, folder)
        pts = [(s, (batch or 1) / t) for s, t in _series(rows, "step_seconds") if t > 0]
        charts.append(line_chart("samples/s" if batch else "steps/s", {"rollouts/s" if batch else "steps/s": pts}))
    resumed = sum(1 for r in rows if r.get("event") == "resumed")
    phases = sorted({r["phase"] for r in rows if "phase" in r})
    last = next((r for r in reversed(rows) if "step" in r and "event" not in r), {})
    facts = [f"{len(rows)} logged rows, last step {last.get('step', '?')}"]
    if phases:
        facts.append("phases: " + ", ".join(phases))
    if resumed:
        facts.append(f"resumed {resumed} time(s)")
    return (f"<h3>{esc(title)}</h3><p class=\"muted\">{esc('; '.join(facts))}</p>"
            f'<div class="charts">{"".join(charts)}</div>')
