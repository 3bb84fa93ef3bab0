"""Stage report: report.json (the machine-readable summary older tools read) and the HTML
report (pipeline.report.write_report, also `s2dit report RUN_DIR`)."""

from __future__ import annotations

import functools
import json
from typing import Any

import fsspec

from ..stage import Stage, StageContext
from ..state_schema import PATH


def _scores(ctx: StageContext, stage: str) -> dict[str, Any] | None:
    url = ctx.outputs(stage).get("scores")
    if not url:
        return None
    with fsspec.open(url, "r") as handle:
        return json.load(handle)


def summary(ctx: StageContext, upstream: tuple[str, ...]) -> dict[str, Any]:
    """The run in one JSON document: config, cache, checkpoints, scores, preview, stage times."""
    stages = {name: ctx.state.get(name) for name in upstream}
    cache, tag = ctx.outputs("generate"), ctx.outputs("tag")
    timings = {f"{name}_s": record["seconds"] for name, record in stages.items() if "seconds" in record}
    for phase, seconds in ctx.outputs("train_ar").get("phase_seconds", {}).items():
        timings[f"train_ar_{phase}_s"] = seconds
    sample = ctx.outputs("sample")
    return {
        "config": ctx.config.resolved(),
        "cache": f"{cache['cache']}@{cache['generation']}" if cache else None,
        "cache_tag": tag.get("tag"),
        "checkpoint": ctx.outputs("train_kd").get("checkpoint"),
        "scores": _scores(ctx, "eval_kd"),
        "ar_checkpoint": ctx.outputs("train_ar").get("checkpoint"),
        "ar_scores": _scores(ctx, "eval_ar"),
        "preview": sample.get("outputs"), "preview_prompts": sample.get("prompts"),
        "compare": ctx.outputs("compare").get("results"),  # results.json of a [compare] grid
        "timings": timings,
        "stages": {name: {k: record[k] for k in ("status", "reason", "seconds", "error") if k in record}
                   for name, record in stages.items()},
    }


def run(ctx: StageContext, upstream: tuple[str, ...]) -> dict[str, Any]:
    from pipeline.report import write_report  # the HTML report (its own package)

    with fsspec.open(ctx.path("report.json"), "w") as handle:
        json.dump(summary(ctx, upstream), handle, indent=1)
    html = write_report(ctx.run_dir)
    ctx.console.print(f"report: {html} (open it in a browser); summary: {ctx.path('report.json')}")
    return {"report_json": ctx.path("report.json"), "report_html": html}


def stage(upstream: tuple[str, ...]) -> Stage:
    """The report stage, after (and reading) every stage in ``upstream``."""
    return Stage(name="report", title="the report", section="report",
                 run=functools.partial(run, upstream=upstream), uses=upstream,
                 artefact="report.html", writes=("report.json", "report.html", "report_assets"),
                 recorded={"report_json": PATH, "report_html": PATH})
