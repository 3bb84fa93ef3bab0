"""Stage report: report.json (the machine-readable summary older tools read) and the HTML
report (pipeline.report.write_report, also `s2dit report RUN_DIR`). ``[report] ray = {...}``
runs it in a Ray task on such a node (its videos sample the students and decode with the
teacher's side; remote.py)."""

from __future__ import annotations

import functools
import json
from typing import Any

import fsspec

from cache_schema.redact import redact_secrets

from ..stage import Stage, StageContext
from ..state_schema import PATH
from .evaluate import scorer
from .training import training_stages


def _scores(ctx: StageContext, stage: str) -> dict[str, Any] | None:
    url = ctx.outputs(stage).get("scores")
    if not url:
        return None
    with fsspec.open(url, "r") as handle:
        return json.load(handle)


def _students(ctx: StageContext, stages: tuple[Stage, ...]) -> dict[str, Any]:
    """Each training stage's checkpoint and the scores of the stage that evaluated it, under
    the keys older tools read: "checkpoint" and "scores" for the first (S2DiT-KD),
    "<name>_checkpoint" and "<name>_scores" for the others ("ar_checkpoint")."""
    out: dict[str, Any] = {}
    trained = training_stages(stages)
    for index, stage in enumerate(trained):
        prefix = "" if index == 0 else f"{stage.trains}_"
        scored_by = scorer(stages, stage.name)
        out[f"{prefix}checkpoint"] = ctx.outputs(stage.name).get("checkpoint")
        out[f"{prefix}scores"] = _scores(ctx, scored_by.name) if scored_by else None
    return out


def summary(ctx: StageContext, upstream: tuple[Stage, ...]) -> dict[str, Any]:
    """The run in one JSON document: config, cache, checkpoints, scores, preview, stage times."""
    stages = {s.name: ctx.state.get(s.name) for s in upstream}
    cache, tag = ctx.outputs("generate"), ctx.outputs("tag")
    timings = {f"{name}_s": record["seconds"] for name, record in stages.items() if "seconds" in record}
    for stage in training_stages(upstream):
        for phase, seconds in ctx.outputs(stage.name).get("phase_seconds", {}).items():
            timings[f"{stage.name}_{phase}_s"] = seconds
    sample = ctx.outputs("sample")
    return redact_secrets({
        "config": ctx.config.resolved(),
        "cache": f"{cache['cache']}@{cache['generation']}" if cache else None,
        "cache_tag": tag.get("tag"),
        **_students(ctx, upstream),
        "preview": sample.get("outputs"), "preview_prompts": sample.get("prompts"),
        "compare": ctx.outputs("compare").get("results"),  # results.json of a [compare] grid
        "timings": timings,
        "stages": {name: {k: record[k] for k in ("status", "reason", "seconds", "error") if k in record}
                   for name, record in stages.items()},
    })


def run(ctx: StageContext, upstream: tuple[Stage, ...]) -> dict[str, Any]:
    from pipeline.report import write_report  # the HTML report (its own package)

    with fsspec.open(ctx.path("report.json"), "w") as handle:
        json.dump(summary(ctx, upstream), handle, indent=1)
    html = write_report(ctx.run_dir)
    ctx.console.print(f"report: {html} (open it in a browser); summary: {ctx.path('report.json')}")
    return {"report_json": ctx.path("report.json"), "report_html": html}


def stage(upstream: tuple[Stage, ...]) -> Stage:
    """The report stage, after (and reading) every stage in ``upstream``."""
    return Stage(name="report", title="the report", section="report",
                 run=functools.partial(run, upstream=upstream),
                 uses=tuple(s.name for s in upstream), ray_task=True,
                 artefact="report.html", writes=("report.json", "report.html", "report_assets"),
                 recorded={"report_json": PATH, "report_html": PATH})
